//! Signed approval tokens in a fleet (issue 15, defect 5): a token is spent at Timmy, so it
//! works once fleet-wide, and only by the house it approves.

use tonic::metadata::MetadataValue;
use uni_wizard_proto::v1::SpendTokenRequest;
use uni_wizard_proto::v1::sovereign_client::SovereignClient;
use uni_wizard_tests::bin;
use uni_wizard_tests::fleet::Fleet;

fn roles(h: &str) -> String {
    if h == "timmy" { "roles: [router, health, worker, sovereign]\n".into() } else { String::new() }
}

/// A token signed with the fleet's Timmy key by the real CLI, for `house` on any node.
fn sign(fleet: &Fleet, house: &str, content: &str) -> String {
    let o = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .args(["approve", "--sign", "--house", house, "--any-node", "--key"])
        .arg(fleet.dir.path().join("keys").join("timmy.key"))
        .args(["--tool", "file_write", "--arg", "path=x.txt", "--arg", &format!("content={content}")])
        .output()
        .expect("approve --sign runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `SpendToken` as `house`, with its own credentials.
async fn spend(fleet: &Fleet, house: &str, token: &str) -> Result<String, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", fleet.nodes["timmy"].grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut r = tonic::Request::new(SpendTokenRequest { token: token.to_owned(), request_id: "r1".into() });
    r.metadata_mut().insert("x-uw-house", MetadataValue::try_from(house).expect("ascii"));
    let bearer = format!("Bearer {}", fleet.nodes[house].token);
    r.metadata_mut().insert("authorization", MetadataValue::try_from(bearer).expect("ascii"));
    SovereignClient::new(channel).spend_token(r).await.map(|a| a.into_inner().nonce)
}

/// Proves Timmy spends a token once fleet-wide: the house it approves spends it (its nonce is
/// then in Timmy's `sovereign.db`), a second spend is refused (E2003, "already used"), another
/// house cannot spend a token made for Allegro (E2003, "another house"), and a forged token is
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_spent_once_at_timmy_and_only_by_its_house() {
    let fleet = Fleet::start(&["timmy", "allegro", "ezra"], &roles);
    let token = sign(&fleet, "allegro", "once");
    let nonce = spend(&fleet, "allegro", &token).await.expect("Allegro spends its token");
    assert_eq!(nonce.len(), 32, "{nonce}");
    let db = rusqlite::Connection::open(fleet.nodes["timmy"].home.join("sovereign.db")).expect("Timmy's token store");
    let spent: i64 =
        db.query_row("SELECT count(*) FROM used_tokens WHERE nonce = ?1", [&nonce], |r| r.get(0)).expect("query");
    assert_eq!(spent, 1, "the nonce is spent at Timmy");

    let again = spend(&fleet, "allegro", &token).await.expect_err("spent before");
    assert_eq!(again.code(), tonic::Code::PermissionDenied, "{again:?}");
    assert!(again.message().starts_with("E2003") && again.message().contains("already used"), "{again:?}");

    let other = sign(&fleet, "allegro", "for allegro");
    let stolen = spend(&fleet, "ezra", &other).await.expect_err("not Ezra's token");
    assert!(stolen.message().starts_with("E2003") && stolen.message().contains("another house"), "{stolen:?}");
    spend(&fleet, "allegro", &other).await.expect("still unspent: Ezra's attempt spent nothing");

    let (body, _) = token.split_once('.').expect("two parts");
    let forged = spend(&fleet, "allegro", &format!("{body}.AAAA")).await.expect_err("forged");
    assert!(forged.message().starts_with("E2003"), "{forged:?}");
}
