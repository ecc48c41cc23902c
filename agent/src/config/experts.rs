//! `allowed_experts` entries.

use shoulder_proto::Fingerprint;

/// One entry of `allowed_experts`.
///
/// A name alone is refused: a common name is only as unique as the CA that
/// vouches for it, and with several plant CAs (a second site, a CA being
/// rolled over) any of them could issue a certificate with the same name.
/// Accepting a bare name while exactly one CA is configured would silently
/// widen the entry the day a second CA is added, so names are always bound
/// to the fingerprint of the CA that must have issued them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedExpert {
    /// `ca:CA-FINGERPRINT/cn:NAME`: a certificate with common name `cn`
    /// issued (directly or through intermediates) by the plant CA whose
    /// certificate has SHA-256 fingerprint `ca`.
    Bound { ca: Fingerprint, cn: String },
    /// `sha256:FINGERPRINT`: exactly this expert certificate.
    Fingerprint(Fingerprint),
    /// Matches no certificate: what a list of only unusable entries becomes
    /// (see [`Config::allowed_experts`]), so that it never means "anyone".
    Nobody,
}

/// How an entry is written, for error messages.
pub const ALLOWED_EXPERT_FORMS: &str = "write entries as \"ca:<plant CA SHA-256 fingerprint>/cn:Ann Expert\" or \"sha256:<expert certificate fingerprint>\"; `openssl x509 -noout -fingerprint -sha256 -in plant-ca.pem` prints a CA's fingerprint";

impl AllowedExpert {
    /// Parses one entry of `allowed_experts`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad_fp = |fp: &str| {
            format!(
                "`{fp}` is not a fingerprint: 64 hex digits, optionally colon-separated (as printed by `openssl x509 -noout -fingerprint -sha256`)"
            )
        };
        if let Some(fp) = s.strip_prefix("sha256:") {
            return Fingerprint::parse(fp.trim())
                .map(Self::Fingerprint)
                .ok_or_else(|| format!("`{s}`: {}", bad_fp(fp.trim())));
        }
        if let Some(rest) = s.strip_prefix("ca:") {
            let Some((fp, cn)) = rest.split_once("/cn:") else {
                return Err(format!(
                    "`{s}` names a CA but no expert; add the name as \"ca:FINGERPRINT/cn:NAME\""
                ));
            };
            let ca = Fingerprint::parse(fp.trim())
                .ok_or_else(|| format!("`{s}`: {}", bad_fp(fp.trim())))?;
            let cn = cn.trim();
            if cn.is_empty() {
                return Err(format!(
                    "`{s}`: an empty name would match nobody; remove the entry"
                ));
            }
            return Ok(Self::Bound { ca, cn: cn.into() });
        }
        let name = s.strip_prefix("cn:").unwrap_or(s).trim();
        if name.is_empty() {
            return Err(format!(
                "`{s}`: an empty entry would match nobody; remove it"
            ));
        }
        Err(format!(
            "`{s}` names an expert but not the CA that must have issued the certificate, so any plant CA could issue a certificate with that name; bind it as \"ca:<plant CA fingerprint>/cn:{name}\""
        ))
    }
}
