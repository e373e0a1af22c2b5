//! The updater thread when the app gets no updates: off altogether, or
//! moltd checking only its own releases (`MOLTD_SELF_REPO` alone). Either
//! way the services start at once.

use super::*;

/// The thread when updates are off: the services start at once; `admit`
/// answers every request with the reason, so the thread only waits for the
/// loop to end.
pub(super) fn agent_off(mut link: Link) {
    if start_at_once(&mut link).is_err() {
        return;
    }
    while let Ok(Some(_)) = link.next(None) {}
}

/// Lets the services start without a release to wait for: PID 1 did not
/// hold them, the main command is let go.
fn start_at_once(link: &mut Link) -> Result<(), String> {
    resume(link, None)?;
    link.ready().and_then(|_| link.release())
}

/// The thread when moltd updates only itself (`MOLTD_SELF_REPO` without a
/// source for the app): the services start at once, and moltd's own
/// releases are checked on the schedule; `admit` answers the app's
/// requests with why they are off.
pub(super) fn agent_itself(mut updater: Updater, mut link: Link) {
    if start_at_once(&mut link).is_err() {
        return;
    }
    let schedule = updater.config().schedule;
    let mut failures = 0;
    let mut next_check = Instant::now();
    loop {
        match link.next(Some(next_check)) {
            Err(_) => return,
            Ok(None) => {
                link.working(true);
                check_itself(&mut updater, &mut link);
                next_check = Instant::now() + schedule.after(poll::Outcome::Normal, &mut failures);
                log::info!(
                    "next check of moltd's releases in {:.1}s",
                    next_check
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                );
            }
            Ok(Some(ToAgent::Client { to, op })) => {
                let reply = carry_out(&mut updater, &mut link, op);
                link.reply(to, reply);
            }
            Ok(Some(_)) => {}
        }
        link.working(false);
    }
}
