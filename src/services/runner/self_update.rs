//! The loop's side of `moltd self-update` and the agent's `self-update`
//! frame: both end in [`Runner::self_update`], which checks the binary,
//! freezes the state, runs the self-test, keeps the binary and execs it
//! (see [`crate::services::reexec`] for the steps and the state format).

use super::Runner;
use crate::agent::protocol::{FromInit, SelfUpdateAnswer};
use crate::control::{self, SelfUpdate};
use crate::services::machine::ClientId;
use log::warn;

/// Who asked for a self-update, and hears how it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Requester {
    /// A control socket client.
    Socket(u64),
    /// The agent, in this life.
    Agent(ClientId),
}

impl Runner {
    /// Replaces PID 1 with the binary `request` names, or says why not and
    /// changes nothing.
    pub(super) fn self_update(&mut self, request: SelfUpdate, from: Requester) {
        let _ = request;
        self.refuse_self_update(from, "self-update is not built yet");
    }

    /// Tells the requester why nothing changed.
    fn refuse_self_update(&mut self, from: Requester, reason: &str) {
        warn!("self-update refused: {reason}");
        match from {
            Requester::Socket(client) => {
                self.reply(client, &control::encode_reply(&Err(reason.to_owned())))
            }
            Requester::Agent(life) => {
                if let Some(link) = self.agent.as_mut().filter(|l| l.client_id() == life) {
                    link.send(FromInit::SelfUpdate(SelfUpdateAnswer::Refused(
                        reason.to_owned(),
                    )));
                }
            }
        }
    }
}
