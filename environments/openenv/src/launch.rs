//! The image-per-episode mode: a container of the image started through the sandbox role,
//! serving its port, waited on until its server is healthy.

use std::time::Duration;

use trawl_core::sandbox::{Sandbox, SandboxBackend, SandboxSpec};

use crate::environment::OpenEnv;
use crate::health::health;

impl OpenEnv {
    /// Starts a container of the image serving its port, and waits until its server is
    /// healthy; returns its base URL and the sandbox (removed when dropped or closed).
    pub(crate) async fn serve(
        &self,
        backend: &dyn SandboxBackend,
    ) -> Result<(String, Box<dyn Sandbox>), String> {
        let image = self.config.image.clone().unwrap_or_default();
        let spec = SandboxSpec {
            image: Some(image.clone()),
            serve: Some(self.config.port),
            labels: [("trawl.run".to_string(), self.run_name.clone())].into(),
            ..SandboxSpec::default()
        };
        let sandbox = backend
            .create(&spec)
            .await
            .map_err(|e| format!("cannot start image `{image}`: {e}"))?;
        let Some(address) = sandbox.endpoint(self.config.port) else {
            let _ = sandbox.close().await;
            return Err(format!(
                "the sandbox backend gave no address for port {} of image `{image}`",
                self.config.port
            ));
        };
        let base = format!("http://{address}");
        let startup = trawl_core::values::secs(self.config.startup_timeout_secs);
        let deadline = tokio::time::Instant::now() + startup;
        loop {
            match health(&self.http, &base, Duration::from_secs(5)).await {
                Ok(()) => return Ok((base, sandbox)),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let _ = sandbox.close().await;
                    return Err(format!(
                        "image `{image}` did not serve OpenEnv on port {} within {startup:?}: {e}",
                        self.config.port
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
