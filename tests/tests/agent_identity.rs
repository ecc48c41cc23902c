//! Who an offer comes from: allow-list names are bound to the CA that issued
//! them, subjects with several names are refused, and the issuer is audited.

use shoulder_agent::config::AllowedExpert;
use shoulder_agent::tls::{PlantTrust, TlsError};
use shoulder_proto::session::{ExpertEvent, ExpertState};
use shoulder_proto::{ByeReason, Fingerprint};
use shoulder_testkit::agent::Agent;
use shoulder_testkit::pki::{ExpertCert, Pki};
use shoulder_testkit::tls_expert::TlsExpert;

async fn wait_consent_pending(e: &mut TlsExpert) {
    e.wait_for("the consent prompt", |ev| {
        matches!(
            ev,
            ExpertEvent::StateChanged(ExpertState::WaitingForConsent { .. })
        )
    })
    .await;
}

/// A certificate whose subject holds two common names, `first` then `last`.
fn two_names(pki: &Pki, first: &str, last: &str) -> ExpertCert {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, first);
    // rcgen keeps one value per attribute type; the CN's OID spelled out is
    // another type to rcgen and the same attribute to everyone else.
    params
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), last);
    pki.issue(params)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_counts_only_from_its_ca() {
    let plant = Pki::new("Plant A CA");
    let other = Pki::new("Plant B CA");
    let both = format!("{}{}", plant.ca_pem, other.ca_pem);
    let entry = format!(
        "ca:{}/cn:Ann Expert",
        Fingerprint(plant.ca_fingerprint()).colon_hex()
    );
    let agent = Agent::start(Some(&both), |c| c.allowed_experts = vec![entry]).await;

    // The same name from the other trusted CA is someone else.
    let impostor = other.expert("Ann Expert", false);
    let mut e = TlsExpert::offer(&agent, Some(&impostor)).await;
    let (reason, detail, _) = e.closed().await;
    assert_eq!(reason, ByeReason::NotAllowed, "{detail}");
    assert!(detail.contains("Plant B CA"), "{detail}");

    let ann = plant.expert("Ann Expert", false);
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    wait_consent_pending(&mut e).await;

    // The audit names the CA that vouched for the expert.
    let records = agent.audit_records();
    let ok: Vec<_> = records.iter().filter(|r| r["event"] == "auth-ok").collect();
    assert_eq!(ok.len(), 1, "{records:?}");
    let issuer = ok[0]["issuer"].as_str().unwrap_or_default();
    assert!(issuer.contains("Plant A CA"), "{issuer}");
    assert!(
        issuer.contains(&Fingerprint(plant.ca_fingerprint()).colon_hex()),
        "{issuer}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_with_two_names_is_refused() {
    let plant = Pki::new("Plant A CA");
    let mallory = two_names(&plant, "Mallory", "Ann Expert");

    // Refused with an allow-list the last name would match…
    let entry = format!(
        "ca:{}/cn:Ann Expert",
        Fingerprint(plant.ca_fingerprint()).colon_hex()
    );
    let agent = Agent::start(Some(&plant.ca_pem), |c| c.allowed_experts = vec![entry]).await;
    let mut e = TlsExpert::offer(&agent, Some(&mallory)).await;
    let (reason, detail, _) = e.closed().await;
    assert_eq!(reason, ByeReason::NotAllowed, "{detail}");
    assert!(detail.contains("2 common names"), "{detail}");
    assert!(detail.contains("single CN"), "{detail}");
    agent.stop().await;

    // …and without one: which name would the prompt show?
    let agent = Agent::start(Some(&plant.ca_pem), |_| {}).await;
    let mut e = TlsExpert::offer(&agent, Some(&mallory)).await;
    let (reason, detail, _) = e.closed().await;
    assert_eq!(reason, ByeReason::NotAllowed, "{detail}");
    assert!(detail.contains("Mallory / Ann Expert"), "{detail}");
    agent.stop().await;
}

#[test]
fn an_entry_naming_an_untrusted_ca_stops_the_start() {
    let plant = Pki::new("Plant A CA");
    let other = Pki::new("Plant B CA");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("plant-ca.pem");
    std::fs::write(&pem, &plant.ca_pem).unwrap();
    let entry = AllowedExpert::Bound {
        ca: Fingerprint(other.ca_fingerprint()),
        cn: "Ann Expert".into(),
    };
    let e = PlantTrust::load(std::slice::from_ref(&pem), vec![entry]).unwrap_err();
    assert!(matches!(e, TlsError::UnknownAllowedCa { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains(&Fingerprint(other.ca_fingerprint()).colon_hex()),
        "{s}"
    );
    assert!(s.contains("Plant A CA") && s.contains("fix:"), "{s}");
    let ok = AllowedExpert::Bound {
        ca: Fingerprint(plant.ca_fingerprint()),
        cn: "Ann Expert".into(),
    };
    PlantTrust::load(&[pem], vec![ok]).unwrap();
}
