//! [`LocalSandboxFactory`], the `local` sandbox kind: built from its config (detection
//! cached per setting), it makes sandboxes, fresh or started from a snapshot, and is the
//! backend trawl's registry holds.

use std::sync::{Arc, Mutex};

use trawl_core::async_trait;
use trawl_core::sandbox::{Sandbox, SandboxError, Snapshot};

use crate::config::{Isolation, LocalSandboxConfig};
use crate::detect::{detected, Detected};
use crate::sandbox::LocalSandbox;
use crate::snapshots::{copy_tree, make_layer, Frozen, Store};
use crate::users::UidLease;

/// Makes sandboxes of one configuration; detects the isolation once. Cheap to clone: every
/// sandbox shares what detection found.
#[derive(Debug, Clone)]
pub struct LocalSandboxFactory {
    inner: Arc<Detected>,
    /// The snapshots its sandboxes were frozen as.
    snapshots: Arc<Store>,
}

impl LocalSandboxFactory {
    /// Detects what isolation works here. Fails when the config requires namespaces and they do
    /// not work, or when `prlimit` is missing; the message says what to install.
    pub fn new(config: LocalSandboxConfig) -> Result<Self, SandboxError> {
        if config.kind != "local" {
            return Err(SandboxError::Unavailable(format!(
                "sandbox type `{}` does not exist here; the sandbox types are: local",
                config.kind
            )));
        }
        let key = (config.isolation, config.bwrap.clone(), config.root.clone());
        let mut cache = detected().lock().unwrap_or_else(|p| p.into_inner());
        let found = cache
            .entry(key)
            .or_insert_with(|| Detected::detect(&config))
            .clone();
        drop(cache);
        let mut detected = found.map_err(SandboxError::Unavailable)?;
        detected.config = config;
        Ok(LocalSandboxFactory {
            inner: Arc::new(detected),
            snapshots: Arc::default(),
        })
    }

    /// The isolation in force for sandboxes from this factory.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// A fresh sandbox: its own empty working folder, removed when it is closed or dropped.
    pub fn create(&self) -> Result<LocalSandbox, SandboxError> {
        self.sandbox(None)
    }

    /// A fresh sandbox that starts as a copy-on-write view of `snapshot`, one of this
    /// factory's: an overlay in its namespace, or, where overlays cannot be mounted, a copy.
    pub async fn view(&self, snapshot: &Snapshot) -> Result<LocalSandbox, SandboxError> {
        let frozen = self.snapshots.get(snapshot)?;
        if self.inner.isolation.views == "overlay" {
            let s = self.sandbox(Some(frozen))?;
            let (layer, uid) = (s.workdir.clone(), s.uid());
            tokio::task::spawn_blocking(move || make_layer(&layer, uid))
                .await
                .map_err(|e| SandboxError::Infra(e.to_string()))?
                .map_err(|e| SandboxError::Infra(format!("cannot make a view's layer: {e}")))?;
            return Ok(s);
        }
        let s = self.sandbox(None)?;
        let (from, to, uid) = (frozen.path().to_path_buf(), s.workdir.clone(), s.uid());
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, uid))
            .await
            .map_err(|e| SandboxError::Infra(e.to_string()))?
            .map_err(|e| SandboxError::Infra(format!("cannot copy a snapshot: {e}")))?;
        Ok(s)
    }

    fn sandbox(&self, view: Option<Arc<Frozen>>) -> Result<LocalSandbox, SandboxError> {
        // Namespace sandboxes share one user; the fallback needs one per sandbox.
        let own_user = self.inner.run_as.is_some() && self.inner.bwrap.is_none();
        let lease = match own_user {
            true => Some(UidLease::take().map_err(SandboxError::Infra)?),
            false => None,
        };
        let dir = self
            .inner
            .make_workdir_for(lease.as_ref().map(UidLease::uid).or(self.inner.run_as))
            .map_err(|e| SandboxError::Infra(format!("cannot create a working folder: {e}")))?;
        let cgroup = match &self.inner.cgroups {
            Some(root) => Some(Arc::new(root.make().map_err(SandboxError::Infra)?)),
            None => None,
        };
        Ok(LocalSandbox {
            cgroup,
            shared: self.inner.clone(),
            snapshots: self.snapshots.clone(),
            view,
            workdir: dir.path().to_path_buf(),
            dir: Mutex::new(Some(dir)),
            lease: Mutex::new(lease),
            runners: Default::default(),
            ran: Default::default(),
        })
    }
}

impl trawl_core::registry::SandboxConfig for LocalSandboxConfig {
    fn build(
        self,
        _cx: &trawl_core::BuildContext,
    ) -> Result<Arc<dyn trawl_core::sandbox::SandboxBackend>, trawl_core::ComponentError> {
        LocalSandboxFactory::new(self)
            .map(|f| Arc::new(f) as Arc<dyn trawl_core::sandbox::SandboxBackend>)
            .map_err(|e| trawl_core::ComponentError::new(e.to_string()))
    }
}

#[async_trait]
impl trawl_core::sandbox::SandboxBackend for LocalSandboxFactory {
    fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.isolation()).unwrap_or(serde_json::Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("sandbox".into(), "local".into());
        }
        v
    }

    async fn create(
        &self,
        _spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(LocalSandboxFactory::create(self)?))
    }

    async fn view(
        &self,
        snapshot: &Snapshot,
        _spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(LocalSandboxFactory::view(self, snapshot).await?))
    }

    async fn drop_snapshot(&self, snapshot: &Snapshot) {
        self.snapshots.drop_some(Some(snapshot)).await;
    }

    async fn shutdown(&self) {
        self.snapshots.drop_some(None).await;
    }
}
