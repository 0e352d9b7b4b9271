//! Log set-up: text or JSON lines on stderr (stdout is kept for machine-readable output such as
//! the API URL), `RUST_LOG` to change levels, and a filter for library lines that mean nothing.
//!
//! An operator reads ERROR as "broken". A healthy start logged several ERROR and WARN lines
//! from the libraries underneath, each of which is normal operation; [`LibraryNoise`] drops
//! exactly those (matched by target and text, so a real error of the same library still shows).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The default levels: `info`, libraries at `warn`.
const DEFAULT_FILTER: &str =
    "info,rumqttd=warn,opcua_server=warn,opcua_crypto=warn,opcua_client=warn,opcua_core=warn";

/// Library lines that are normal operation, as (target prefix, text in the line, why).
const NOISE: &[(&str, &str, &str)] = &[
    (
        "opcua_client",
        "BadNoSubscription",
        // The client keeps publish requests outstanding; one that reaches the server before the
        // subscription exists, or after it was deleted on reconnect/stop, is answered with this
        // fault. Missing data is caught by the source's own silence watch.
        "publish before the subscription exists",
    ),
    (
        "opcua_client::config",
        "contains no endpoints",
        // The gateway connects by endpoint URL, never from a list of endpoints in the config.
        "no endpoint list: the gateway connects by URL",
    ),
    (
        "opcua_client::custom_types",
        "",
        // Type info for abstract base types (i=29 Enumeration, ...) that servers expose; the
        // gateway decodes no custom structures.
        "custom structure types are not used",
    ),
    (
        "opcua_client::session::event_loop",
        "disconnected: Good",
        // The session closed because the gateway asked it to (stop, reconnect).
        "a requested disconnect",
    ),
    (
        "rumqttd",
        "connection closed by peer",
        // The demo's embedded broker: its readiness probe and clients that leave at stop.
        "a client left the embedded broker",
    ),
    (
        "rumqttd",
        "already gone",
        // The embedded broker's router, when a client's DISCONNECT and its closed socket
        // both report the same departure at stop.
        "a client left the embedded broker",
    ),
    (
        "rumqttd",
        "router-drop",
        // The embedded broker's view of the gateway's own disconnect at stop.
        "a client left the embedded broker",
    ),
    (
        "opcua_server::transport",
        "Broken pipe",
        // The demo's embedded simulator, still sending a publish response to the gateway's
        // session while the gateway closes it (stop, or a reconnect): a client that left.
        "a client left the embedded simulator",
    ),
    (
        "opcua_server::transport",
        "Connection reset by peer",
        // As above, when the socket was reset rather than closed.
        "a client left the embedded simulator",
    ),
];

/// Drops the library lines listed in [`NOISE`].
pub struct LibraryNoise;

impl<S> Filter<S> for LibraryNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let target = event.metadata().target();
        let candidates: Vec<&str> = NOISE
            .iter()
            .filter(|(prefix, _, _)| target.starts_with(prefix))
            .map(|(_, text, _)| *text)
            .collect();
        if candidates.is_empty() {
            return true;
        }
        let mut text = FieldText(String::new());
        event.record(&mut text);
        !candidates.iter().any(|t| text.0.contains(t))
    }
}

/// Every field of an event as text, for matching.
struct FieldText(String);

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

/// Sets up logging to stderr. `RUST_LOG` overrides the default levels.
pub fn init_logging(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: a log file or journald gets plain text that grep can read.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let layer = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(LibraryNoise).with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures formatted lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn listed_library_noise_is_dropped_and_everything_else_kept() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(LibraryNoise),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "opcua_client::session", "Received a service fault of BadNoSubscription for the request");
            tracing::warn!(target: "opcua_client::config", "Endpoint config contains no endpoints");
            tracing::error!(target: "rumqttd::server::broker", error = "connection closed by peer", "Error while handling MQTT connect packet");
            tracing::error!(target: "opcua_client::session", "Received a service fault of BadSessionIdInvalid for the request");
            tracing::error!(target: "rumqttd::server::broker", "cannot bind 1883");
            tracing::warn!(target: "aas_gateway::x", "BadNoSubscription in our own code is kept");
            tracing::error!(target: "opcua_server::transport::tcp", "write bytes task failed: Broken pipe (os error 32)");
            tracing::error!(target: "opcua_server::session", "Broken pipe elsewhere in the server is kept");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("BadNoSubscription for"), "{text}");
        assert!(!text.contains("no endpoints"), "{text}");
        assert!(!text.contains("connect packet"), "{text}");
        assert!(text.contains("BadSessionIdInvalid"), "{text}");
        assert!(text.contains("cannot bind 1883"), "{text}");
        assert!(text.contains("in our own code is kept"), "{text}");
        assert!(!text.contains("write bytes task failed"), "{text}");
        assert!(text.contains("elsewhere in the server is kept"), "{text}");
    }
}
