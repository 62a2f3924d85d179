//! Reading an HTTP answer with a cap (feature `http`). Every body trawl reads from a server (a
//! model server's reply, an OpenEnv server's `/health`) goes through [`read_capped`]: it is read
//! chunk by chunk and refused as soon as it is known to pass its cap, never held whole, so
//! trawl's memory stays bounded whatever a server sends. A body still arriving when the
//! request's time runs out is a timeout, told apart from one that broke off.

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the cap (`declared`: its Content-Length, when it said so up front).
    #[error("answered more than {cap} bytes")]
    TooLarge { cap: u64, declared: Option<u64> },
    /// The request's timeout ran out while the body was still arriving (a slow or endless body).
    #[error("timed out while sending its answer")]
    TimedOut,
    /// The connection broke, or the body was not valid HTTP framing.
    #[error("cut off its answer: {0}")]
    Cut(String),
}

/// Reads `response`'s body, at most `cap` bytes of it. A Content-Length over the cap is refused
/// before anything is read; a body that grows past it is refused at the chunk that does.
pub async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = response.content_length().filter(|l| *l > cap) {
        return Err(BodyError::TooLarge {
            cap,
            declared: Some(len),
        });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > cap {
                    return Err(BodyError::TooLarge {
                        cap,
                        declared: None,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(BodyError::TimedOut),
            Err(e) => return Err(BodyError::Cut(error_chain(&e))),
        }
    }
}

/// An error with its causes, which is where reqwest keeps the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
