//! A certificate authority made with the `openssl` CLI, for the tests whose
//! peers are not pgrollout's own (a TLS-only PostgreSQL, an SMTP server):
//! their certificates come from the tool an operator would use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::run_command;

const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA's certificate and key (PEM files) in a test's directory.
pub struct OpensslCa {
    name: String,
    dir: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl OpensslCa {
    /// A P-256 CA valid for two days, `<name>-ca.pem` and `<name>-ca.key` in `dir`.
    pub async fn create(dir: &Path, name: &str) -> Result<OpensslCa> {
        let ca = OpensslCa {
            name: name.to_owned(),
            dir: dir.to_owned(),
            certificate: dir.join(format!("{name}-ca.pem")),
            key: dir.join(format!("{name}-ca.key")),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=pgrollout test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &ca.key.to_string_lossy(),
            "-out",
            &ca.certificate.to_string_lossy(),
        ])
        .await?;
        Ok(ca)
    }

    /// A server certificate with this subjectAltName (`IP:127.0.0.1`,
    /// `DNS:localhost`), issued by this CA: its certificate and key files.
    pub async fn issue_server_certificate(
        &self,
        subject_alt_name: &str,
    ) -> Result<(PathBuf, PathBuf)> {
        let stem = self.dir.join(format!("{}-server", self.name));
        let [key, request, extensions, certificate] =
            ["key", "csr", "ext", "crt"].map(|ext| stem.with_extension(ext));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=pgrollout test server",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &request.to_string_lossy(),
        ])
        .await?;
        std::fs::write(
            &extensions,
            format!(
                "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {subject_alt_name}\n"
            ),
        )?;
        let serial = format!("0x{:016x}", fastrand::u64(..));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &request.to_string_lossy(),
            "-CA",
            &self.certificate.to_string_lossy(),
            "-CAkey",
            &self.key.to_string_lossy(),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &extensions.to_string_lossy(),
            "-out",
            &certificate.to_string_lossy(),
        ])
        .await?;
        Ok((certificate, key))
    }
}

async fn openssl(args: &[&str]) -> Result<()> {
    let out = run_command("openssl", args, &[], OPENSSL_TIMEOUT)
        .await
        .context("running openssl (install the openssl package)")?;
    anyhow::ensure!(out.code == 0, "openssl {} failed: {out}", args.join(" "));
    Ok(())
}
