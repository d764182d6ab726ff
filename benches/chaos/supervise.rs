//! Supervision: the broker and the engine's processes, each restarted when
//! it exits (as an orchestrator would), whether the soak killed it or it
//! failed by itself; and the soak's hands on them: SIGKILL, SIGSTOP and
//! SIGCONT, and a Postgres restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// How to start one process.
#[derive(Clone)]
pub struct Spec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
}

struct Running {
    spec: Spec,
    child: Child,
    /// The soak killed it: its exit is expected.
    killed: bool,
}

#[derive(Clone)]
pub struct Supervisor {
    running: Arc<Mutex<HashMap<&'static str, Running>>>,
    logs: PathBuf,
    /// Exits the soak did not cause (a process that failed by itself).
    pub unplanned_exits: Arc<AtomicU64>,
    pub restarts: Arc<AtomicU64>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Supervisor {
    pub fn new(logs: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            running: Arc::default(),
            logs,
            unplanned_exits: Arc::default(),
            restarts: Arc::default(),
            stopping: Arc::default(),
        })
    }

    pub fn start(&self, spec: Spec) -> anyhow::Result<()> {
        let child = self.spawn(&spec)?;
        self.running.lock().unwrap().insert(
            spec.name,
            Running {
                spec,
                child,
                killed: false,
            },
        );
        Ok(())
    }

    fn spawn(&self, spec: &Spec) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", spec.name)))?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = &spec.dir {
            cmd.current_dir(dir);
        }
        cmd.spawn()
            .with_context(|| format!("start {}", spec.program.display()))
    }

    /// SIGKILL; the watchdog starts it again.
    pub fn kill(&self, name: &str) {
        if let Some(r) = self.running.lock().unwrap().get_mut(name) {
            r.killed = true;
            let _ = r.child.kill();
        }
    }

    /// The process id of `name`'s current run.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running.lock().unwrap().get(name).map(|r| r.child.id())
    }

    pub fn signal(&self, name: &str, signal: &str) {
        if let Some(r) = self.running.lock().unwrap().get(name) {
            let _ = Command::new("kill")
                .args([signal, &r.child.id().to_string()])
                .status();
        }
    }

    /// Restarts every process that exited, every 200 ms, until `stop_all`.
    pub fn watch(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            while !this.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut running = this.running.lock().unwrap();
                for r in running.values_mut() {
                    let Ok(Some(status)) = r.child.try_wait() else {
                        continue;
                    };
                    if !r.killed {
                        eprintln!(
                            "chaos: {} exited by itself ({status}); restarting it",
                            r.spec.name
                        );
                        this.unplanned_exits.fetch_add(1, Ordering::Relaxed);
                    }
                    match this.spawn(&r.spec) {
                        Ok(child) => {
                            r.child = child;
                            r.killed = false;
                            this.restarts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("chaos: could not restart {}: {e:#}", r.spec.name),
                    }
                }
            }
        });
    }

    /// SIGTERM to every process (engine first, the broker last), then
    /// SIGKILL what is left after 20 s.
    pub fn stop_all(&self, last: &str) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut running = self.running.lock().unwrap();
        let mut names: Vec<_> = running.keys().copied().filter(|n| *n != last).collect();
        names.push(last);
        for name in names {
            let Some(mut r) = running.remove(name) else {
                continue;
            };
            let _ = Command::new("kill")
                .args(["-CONT", &r.child.id().to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-TERM", &r.child.id().to_string()])
                .status();
            for _ in 0..200 {
                if matches!(r.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// Stops every process when the soak ends, however it ends.
pub struct StopOnDrop(pub Supervisor);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop_all("broker");
    }
}

/// Restarts the soak's own Postgres cluster with an immediate stop (a
/// crash: recovery on start), by the command `scripts/chaos` composed.
pub fn restart_postgres(command: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args(["-c", command])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

pub async fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} did not open port {port} within 30 s")
}
