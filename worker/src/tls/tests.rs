use super::test_pki::TestCa;
use super::*;

#[test]
fn the_three_files_load_and_each_bad_one_is_named_with_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("files CA");
    let files = ca.identity("worker-0").write(dir.path(), "w0");
    TlsConfig::load(&files).expect("a good identity loads");

    let missing = TlsFiles { cert: dir.path().join("absent.pem"), ..files.clone() };
    let e = TlsConfig::load(&missing).unwrap_err().to_string();
    assert!(e.starts_with("--tls-cert ") && e.contains("absent.pem") && e.contains("cannot read"), "{e}");

    // A key file that holds a certificate instead.
    let e = TlsConfig::load(&TlsFiles { key: files.cert.clone(), ..files.clone() }).unwrap_err().to_string();
    assert!(e.starts_with("--tls-key ") && e.contains("private key"), "{e}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = TlsConfig::load(&TlsFiles { ca: empty, ..files.clone() }).unwrap_err().to_string();
    assert!(e.starts_with("--tls-ca ") && e.contains("no PEM certificate"), "{e}");

    // Another identity's key does not match this certificate.
    let other = ca.identity("worker-1").write(dir.path(), "w1");
    let e = TlsConfig::load(&TlsFiles { key: other.key, ..files }).unwrap_err().to_string();
    assert!(e.starts_with("--tls-key ") && e.contains("usable identity with --tls-cert"), "{e}");
}
