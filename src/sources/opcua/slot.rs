//! The handle through which a running OPC UA source announces its session, for write-back,
//! readiness and the audit log (`SourceStats::session`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use opcua::client::Session;
use tokio::sync::watch;

/// Connection state of one source's OPC UA session, as announced by the source.
#[derive(Clone, Default)]
pub enum SessionState {
    /// No session (not yet created, or the source ended).
    #[default]
    Absent,
    /// The session exists and is connecting for the first time.
    Connecting(Arc<Session>),
    /// Connected; writes go through this session.
    Connected(Arc<Session>),
    /// The connection is lost; async-opcua is reconnecting the same session.
    Lost(Arc<Session>),
}

/// The handle a source announces its session through (held in `SourceStats`).
pub struct SessionSlot {
    tx: watch::Sender<SessionState>,
    /// Connected at least once since start (a later "connecting" is a reconnect).
    ever_connected: AtomicBool,
}

impl Default for SessionSlot {
    fn default() -> Self {
        SessionSlot {
            tx: watch::Sender::new(SessionState::Absent),
            ever_connected: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for SessionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.tx.borrow() {
            SessionState::Absent => "absent",
            SessionState::Connecting(_) => "connecting",
            SessionState::Connected(_) => "connected",
            SessionState::Lost(_) => "lost",
        };
        f.debug_tuple("SessionSlot").field(&state).finish()
    }
}

impl SessionSlot {
    /// The source created its session; it is connecting. (async-opcua then reports the first
    /// connect, like every later one, as `Reconnected`, which calls [`Self::reconnected`].)
    pub fn attach(&self, session: &Arc<Session>) {
        self.tx
            .send_replace(SessionState::Connecting(session.clone()));
    }
    /// The connection is lost; the session is being re-established.
    pub fn lost(&self) {
        self.tx.send_modify(|s| {
            if let SessionState::Connected(sess) = s {
                *s = SessionState::Lost(sess.clone());
            }
        });
    }
    /// The session is connected (first connect or after a reconnect).
    pub fn reconnected(&self) {
        self.ever_connected.store(true, Ordering::Relaxed);
        self.tx.send_modify(|s| {
            if let SessionState::Lost(sess) | SessionState::Connecting(sess) = s {
                *s = SessionState::Connected(sess.clone());
            }
        });
    }
    /// The source ended.
    pub fn clear(&self) {
        self.tx.send_replace(SessionState::Absent);
    }
    /// The session, if connected right now.
    pub fn session(&self) -> Option<Arc<Session>> {
        match &*self.tx.borrow() {
            SessionState::Connected(s) => Some(s.clone()),
            _ => None,
        }
    }
    /// The state now.
    pub fn state(&self) -> SessionState {
        self.tx.borrow().clone()
    }
    /// True once the session was connected since start.
    pub fn was_connected(&self) -> bool {
        self.ever_connected.load(Ordering::Relaxed)
    }
    /// True when connected right now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.tx.borrow(), SessionState::Connected(_))
    }
    /// Follows state changes (for the audit log).
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.tx.subscribe()
    }
}
