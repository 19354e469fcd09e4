//! A notification channel of a kind pgrollout does not have is refused at
//! start with the kinds it does have, email among them (issue 21, item 5),
//! not with serde's message about an enum variant.

use anyhow::Result;
use pgrollout_tests::serve_with;

#[tokio::test]
async fn an_unknown_channel_kind_is_refused_with_the_valid_kinds() -> Result<()> {
    let out = serve_with(
        "notification-kind",
        "[environments.dev]\nzone = \"dev\"\n\
             [notifications.channels.ops-pager]\nkind = \"pager\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "unknown channel kind \"pager\": use one of \"slack\", \"webhook\", \"email\""
        ),
        "{out}"
    );
    Ok(())
}

/// An email channel whose SMTP password variable is not set stops the start
/// naming the variable, not a later delivery quietly.
#[tokio::test]
async fn an_email_channel_without_its_password_is_refused_at_start_by_variable() -> Result<()> {
    let out = serve_with(
        "notification-smtp-password",
        "[environments.dev]\nzone = \"dev\"\n\
             [notifications.channels.dba-mail]\nkind = \"email\"\nsmtp_host = \"smtp.example.com\"\n\
             smtp_username = \"pgrollout\"\nsmtp_password_env = \"PGROLLOUT_TEST_UNSET_SMTP_PASSWORD\"\n\
             from = \"pgrollout@example.com\"\nto = [\"dba@example.com\"]\n\
             [notifications.routes]\ndev = [\"dba-mail\"]\n",
    )
    .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "notifications.channels.dba-mail: environment variable PGROLLOUT_TEST_UNSET_SMTP_PASSWORD is not set"
        ),
        "{out}"
    );
    Ok(())
}
