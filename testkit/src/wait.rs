//! Polling with a deadline, for conditions nothing announces (a picture on
//! the expert's side, pixels in a screendump).

use std::time::{Duration, Instant};

/// Checks `cond` every `poll` until it holds (`true`) or `within` has
/// passed (`false`, after one last check at the deadline). The caller
/// asserts, with its own description of what did not happen.
pub fn wait_until(within: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_once_or_after_a_few_polls_or_times_out() {
        assert!(wait_until(Duration::ZERO, Duration::from_millis(1), || {
            true
        }));
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
