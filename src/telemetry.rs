//! Logging through tracing: human-readable by default, `LOG_FORMAT=json`
//! for machines, filtered by `RUST_LOG` (default `info`).
//!
//! Logs go to stderr through a writer that cannot fail: a line that cannot
//! be written (the reader of a pipe has exited, as `| tee` does on Ctrl-C)
//! is dropped. Otherwise tracing-subscriber reports the failure with
//! `eprintln!`, which panics on a closed stderr, and the first task to log
//! after that (the SIGTERM handler, a request, a lane) would die with it.

use std::io::{self, Write};

use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .log_internal_errors(false);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: tests may initialise more than once.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(without_warp_request_lines())
            .try_init()
    } else {
        builder
            .finish()
            .with(without_warp_request_lines())
            .try_init()
    };
}

/// warp's request trace opens the span every request's events belong to
/// (method, path, remote address), which we keep, and logs each request's
/// start and outcome, which we drop: it logs every 5xx as an error, a
/// second time for those their handler logged, and as an error where the
/// handler judged a warning right. `http::log_outcome` logs the outcome
/// instead, inside the same span.
fn without_warp_request_lines() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| !(meta.is_event() && meta.target() == "warp::filters::trace"))
}

/// stderr, dropping what it cannot write.
pub struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = Lossy<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Lossy(io::stderr())
    }
}

/// A writer that reports every write as done: failures are dropped.
pub struct Lossy<W>(pub W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_closed_pipe_swallows_lines_instead_of_failing() {
        let mut w = Lossy(Closed);
        assert!(writeln!(w, "a log line").is_ok());
        assert!(w.flush().is_ok());
    }
}
