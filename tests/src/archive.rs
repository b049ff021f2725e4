//! Helpers for the archive tests: the archiver run in-process until it has
//! archived the whole topic, the archive's status, and fastavro (an Avro
//! implementation independent of this project) installed into `target/`.

use std::path::PathBuf;
use std::time::Duration;

use likes_replay::archive::{run, status};

use crate::process::repo_root;
use crate::{TestEnv, eventually};

/// The fastavro release the independent-reader test pins.
const FASTAVRO: &str = "1.12.1";

/// Archive settings for tests: files complete after a second.
pub fn quick() -> run::Args {
    run::Args {
        roll_seconds: 1,
        roll_bytes: 64 << 10,
        metrics_addr: "127.0.0.1:0".parse().expect("a socket address"),
    }
}

/// Runs the archiver in-process until every partition is archived to the
/// topic's current end, then stops it (its open files completed).
pub async fn archive_everything(env: &TestEnv) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stack = env.stack.clone();
    let archiver = tokio::spawn(async move {
        run::run(&stack, quick(), async {
            let _ = stopped.await;
        })
        .await
    });
    let caught_up = eventually(Duration::from_secs(60), || async {
        let rows = status::run(&env.stack).await?;
        Ok(rows.iter().all(|r| r.archived_to == r.topic_end))
    })
    .await;
    let _ = stop.send(());
    archiver.await??;
    caught_up
}

/// The archive's directory (tests use a local one).
pub fn dir(env: &TestEnv) -> PathBuf {
    PathBuf::from(&env.stack.archive_url)
}

/// Removes the test's archive directory.
pub fn remove(env: &TestEnv) {
    let _ = std::fs::remove_dir_all(dir(env));
}

/// A python with fastavro, in `target/fastavro-venv` (made once).
pub async fn fastavro_python() -> anyhow::Result<PathBuf> {
    let venv = repo_root().join("target").join("fastavro-venv");
    let python = venv.join("bin").join("python");
    let ready = async {
        tokio::process::Command::new(&python)
            .args(["-c", "import fastavro"])
            .status()
            .await
            .is_ok_and(|s| s.success())
    };
    if !ready.await {
        let made = tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .await?;
        anyhow::ensure!(made.success(), "python3 -m venv failed");
        let installed = tokio::process::Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q", &format!("fastavro=={FASTAVRO}")])
            .status()
            .await?;
        anyhow::ensure!(installed.success(), "pip install fastavro failed");
    }
    Ok(python)
}
