//! The command line of the timed runs (`soak`, `agent_stress`):
//! `--minutes N` and, for runs that take one, `--seed S`.

/// Longest run accepted, in minutes: a day (a typo such as `--minutes
/// 6000` is refused rather than run for days).
pub const MAX_MINUTES: f64 = 24.0 * 60.0;

/// How long a run lasts and its seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunArgs {
    /// Wall-clock minutes, possibly fractional: more than 0, at most
    /// [`MAX_MINUTES`].
    pub minutes: f64,
    /// Seed of the run's choices.
    pub seed: u64,
}

impl RunArgs {
    /// Parses `args` (without the program name): `--minutes N`, and
    /// `--seed S` when `takes_seed`. What is not given keeps `defaults`.
    /// `None` for anything else (an unknown argument, `--help`, a missing
    /// or out-of-range value): the caller prints its usage.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        defaults: Self,
        takes_seed: bool,
    ) -> Option<Self> {
        let mut out = defaults;
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--minutes" => {
                    out.minutes = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|m: &f64| *m > 0.0 && *m <= MAX_MINUTES)?;
                }
                "--seed" if takes_seed => out.seed = args.next()?.parse().ok()?,
                _ => return None,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: RunArgs = RunArgs {
        minutes: 2.0,
        seed: 1,
    };

    fn parse(args: &[&str], takes_seed: bool) -> Option<RunArgs> {
        RunArgs::parse(args.iter().map(|a| a.to_string()), DEFAULTS, takes_seed)
    }

    #[test]
    fn minutes_and_seed_are_read_and_defaults_kept() {
        assert_eq!(parse(&[], true), Some(DEFAULTS));
        assert_eq!(
            parse(&["--minutes", "0.5", "--seed", "7"], true),
            Some(RunArgs {
                minutes: 0.5,
                seed: 7
            })
        );
        assert_eq!(
            parse(&["--minutes", "1440"], false).map(|a| a.minutes),
            Some(1440.0)
        );
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for args in [
            &["--minutes"][..],
            &["--minutes", "0"],
            &["--minutes", "-1"],
            &["--minutes", "1441"],
            &["--minutes", "NaN"],
            &["--minutes", "ten"],
            &["--seed", "x"],
            &["--seed"],
            &["--help"],
            &["-h"],
            &["--verbose"],
        ] {
            assert_eq!(parse(args, true), None, "{args:?}");
        }
        assert_eq!(parse(&["--seed", "7"], false), None);
    }
}
