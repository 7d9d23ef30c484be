//! The `lb-proxy` command: `run`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_proxy::Config;
use mimalloc::MiMalloc;

/// Small, short-lived allocations per request are the proxy's pattern; mimalloc
/// serves them faster than glibc's malloc (about 7 % of CPU in a profile).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// lb-proxy: a fast reverse proxy and load balancer.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the proxy with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validates a configuration file and exits (like `nginx -t`).
    Check {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Starts three demo backends and the proxy in front of them.
    Demo(lb_proxy::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(loaded) => {
                let admin = loaded.admin.listen.get_ref();
                // Without a token this is an error already (validation says so).
                if loaded.admin.enabled && !admin.ip().is_loopback() {
                    eprintln!(
                        "note: the admin listener {admin} is reachable from other hosts; every request to it \
                         must carry the admin token"
                    );
                }
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            run_on_runtime(async move {
                let mut stop = lb_proxy::StopSignal::listen()?;
                let mut reload = lb_proxy::ReloadSignal::listen()?;
                let mut proxy = lb_proxy::Proxy::new(config).start().await?;
                tracing::info!(listen = ?proxy.listen_addresses(), admin = ?proxy.admin_address(), "lb-proxy running");
                loop {
                    tokio::select! {
                        _ = stop.wait() => break,
                        _ = reload.wait() => {
                            let _ = reload_from(&mut proxy, &path).await;
                        }
                        request = proxy.reload_requested() => {
                            let result = reload_from(&mut proxy, &path).await;
                            request.answer(result);
                        }
                    }
                }
                tracing::info!("stopping: draining connections (a second signal stops at once)");
                tokio::select! {
                    () = proxy.shutdown() => {}
                    () = stop.wait() => tracing::warn!("second stop signal: not waiting for the drain"),
                }
                Ok(())
            })
        }
        Command::Demo(args) => run_on_runtime(lb_proxy::demo::run(args)),
    }
}

/// Re-reads `path` and applies it; any error leaves the running configuration in force.
async fn reload_from(proxy: &mut lb_proxy::RunningProxy, path: &std::path::Path) -> Result<(), String> {
    let outcome = match Config::load(path) {
        Ok(config) => proxy.reload(config).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match &outcome {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(error) => tracing::error!("reload refused; the running configuration stays: {error}"),
    }
    outcome
}

/// Runs `main` on a one-thread runtime: worker 0, which also runs discovery,
/// health checks and the admin listener; `worker_threads` > 1 starts the
/// other workers on threads of their own (thread per core, no cross-thread wakeups).
fn run_on_runtime<F>(main: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match runtime {
        Ok(rt) => rt.block_on(main),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lb-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes when the log goes to a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
