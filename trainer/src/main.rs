//! The `enlighten` command line.

mod demo;

use clap::{Parser, Subcommand};
use enlighten_trainer::DeviceChoice;

/// `--device auto|cpu|cuda`, listed in the help: the library type knows nothing of clap.
fn device_parser() -> impl clap::builder::TypedValueParser<Value = DeviceChoice> {
    use clap::builder::TypedValueParser;
    let names = DeviceChoice::ALL.map(DeviceChoice::name);
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<DeviceChoice>().unwrap_or_default())
}

#[derive(Parser)]
#[command(
    name = "enlighten",
    version,
    about = "Enlightenment Period training strategies: fused ops, strategy engine, trainer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What train, compare and analyze may change in a configuration from the command line.
#[derive(clap::Args)]
struct Changes {
    /// Override [run] device.
    #[arg(long, value_parser = device_parser())]
    device: Option<DeviceChoice>,
    /// Override a configuration value: --set optim.lr=0.1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Keep this share of the training set (the data-scale ablations); --set data.subset=F.
    #[arg(long, value_name = "FRACTION")]
    subset: Option<f64>,
}

/// Data parallelism on this machine.
#[derive(clap::Args)]
struct Launch {
    /// Train as N processes (one per GPU on CUDA), each given torchrun's variables; rank 0's
    /// output is shown, the others' go to <run folder>/logs/rank-<r>.log. Under torchrun or
    /// another launcher that sets WORLD_SIZE, leave it out.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
}

/// This command line as `nproc` ranks of a local job when `--nproc` asks for more than one
/// (None: run here, as one process or as the rank a launcher started).
fn launch_ranks(launch: &Launch, log_dir: std::path::PathBuf) -> Option<enlighten_trainer::Result<()>> {
    let nproc = launch.nproc?;
    if std::env::var_os("WORLD_SIZE").is_some() {
        return Some(Err(enlighten_trainer::Error::Launch {
            rank: 0,
            problem: "--nproc under a launcher that already set WORLD_SIZE (leave --nproc out under torchrun)".into(),
        }));
    }
    if nproc == 1 {
        return None;
    }
    let job = |program| enlighten_trainer::processes::Job {
        program,
        args: args_without_nproc(std::env::args_os().skip(1)),
        nproc,
        log_dir,
    };
    Some(
        std::env::current_exe()
            .map_err(|e| enlighten_trainer::Error::Launch {
                rank: 0,
                problem: format!("cannot find this program's path: {e}"),
            })
            .and_then(|program| enlighten_trainer::processes::run(&job(program), interrupt_flag())),
    )
}

/// The command line without `--nproc N` / `--nproc=N`: what each rank runs.
fn args_without_nproc(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--nproc") => skip_value = true,
            Some(a) if a.starts_with("--nproc=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

#[derive(Subcommand)]
enum Command {
    /// Run every op on the CPU (and CUDA when present), check each against its f64 reference and
    /// time it against the tch composite; prints a table and fails if any check fails.
    Demo {
        #[arg(long, value_parser = device_parser(), default_value = "auto")]
        device: DeviceChoice,
    },
    /// Print what this build and machine offer: versions, the CUDA probe, embedded kernels.
    Info,
    /// Train a model as a TOML configuration says (see enlighten_trainer::train::TrainConfig);
    /// writes runs/<name>/{config.toml, metrics.jsonl, summary.json, checkpoints/}.
    Train {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Continue the run from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        launch: Launch,
        #[command(flatten)]
        changes: Changes,
    },
    /// Train every strategy x seed of a configuration (finished runs are skipped, interrupted
    /// ones resume), then write runs/<name>/{report.md, report.json, *.png}.
    Compare {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Comma-separated strategies (default: [compare] strategies, else mixup,mixup-pause).
        #[arg(long, value_delimiter = ',')]
        strategies: Option<Vec<String>>,
        /// Seeds per strategy (default: [compare] seeds, else 3).
        #[arg(long)]
        seeds: Option<u32>,
        #[command(flatten)]
        launch: Launch,
        #[command(flatten)]
        changes: Changes,
    },
    /// The paper's EP diagnostics for a classification configuration: gradient interference
    /// (pairs, batch size, width), zero activations for vanilla vs Mixup at two alphas, PCA
    /// embeddings; writes runs/<name>-analysis/{report.md, analysis.json, *.png}.
    Analyze {
        /// The configuration to analyse.
        #[arg(long, required_unless_present = "run")]
        config: Option<std::path::PathBuf>,
        /// Or a run directory: its resolved config.toml.
        #[arg(long, conflicts_with = "config")]
        run: Option<std::path::PathBuf>,
        /// Steps of each short training.
        #[arg(long, default_value_t = 150)]
        steps: u64,
        #[command(flatten)]
        changes: Changes,
    },
}

fn analyze(path: &std::path::Path, steps: u64, changes: &Changes) -> enlighten_trainer::Result<()> {
    let config = load_config(path, changes)?;
    let options = enlighten_trainer::analyze::AnalyzeOptions {
        steps,
        ..Default::default()
    };
    let (analysis, dir) = enlighten_trainer::analyze::analyze(&config, &options, true)?;
    println!("{}", analysis.tables());
    println!("report: {}", dir.join("report.md").display());
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM asks the current run to checkpoint and stop at the end of its step.
fn interrupt_flag() -> Option<&'static std::sync::atomic::AtomicBool> {
    enlighten_trainer::train::signals::install()
}

fn load_config(
    path: &std::path::Path,
    changes: &Changes,
) -> enlighten_trainer::Result<enlighten_trainer::train::TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| enlighten_trainer::Error::Data {
        path: path.to_path_buf(),
        problem: e.to_string(),
        hint: "pass --config with a TOML file (see configs/)".into(),
    })?;
    let mut overrides = changes.overrides.clone();
    overrides.extend(changes.subset.map(|f| format!("data.subset={f}")));
    let mut config = enlighten_trainer::train::TrainConfig::from_toml_with(&text, &overrides)?;
    if let Some(d) = changes.device {
        config.run.device = d;
    }
    Ok(config)
}

fn compare(
    path: &std::path::Path,
    strategies: Option<Vec<String>>,
    seeds: Option<u32>,
    launch: &Launch,
    changes: &Changes,
) -> enlighten_trainer::Result<()> {
    use enlighten_trainer::compare::{compare, compare_dir, run_all, TrainRunner};
    let config = load_config(path, changes)?;
    if let Some(job) = launch_ranks(launch, compare_dir(&config).join("logs")) {
        return job;
    }
    let parallel = enlighten_trainer::train::DataParallel::from_env(&config.run)?;
    let mut section = config.compare.clone().unwrap_or_default();
    if let Some(names) = strategies {
        section.strategies = names.iter().map(|n| n.parse()).collect::<enlighten::Result<_>>()?;
        section.baseline = section.baseline.filter(|b| section.strategies.contains(b));
    }
    if let Some(s) = seeds {
        section.seeds = s;
    }
    let mut runner = TrainRunner::new(interrupt_flag(), parallel.as_ref());
    if parallel.as_ref().is_some_and(|p| p.rank() != 0) {
        // Every rank trains each run; rank 0 alone writes the report.
        run_all(&config, &section, &mut runner)?;
        return Ok(());
    }
    let done = compare(&config, &section, &mut runner)?;
    runner.overall.finish_and_clear();
    println!("{}\n", done.report.table());
    println!("report: {}", compare_dir(&config).join("report.md").display());
    for png in &done.plots {
        println!("plot:   {}", png.display());
    }
    Ok(())
}

/// Trains here (one process, or the rank a launcher started), or launches `--nproc` ranks. Every
/// rank prints the results; the parameter digest is the same on all of them.
fn train(path: &std::path::Path, resume: bool, launch: &Launch, changes: &Changes) -> enlighten_trainer::Result<()> {
    let config = load_config(path, changes)?;
    let run_dir = config.run.out_dir.join(&config.run.name);
    if let Some(job) = launch_ranks(launch, run_dir.join("logs")) {
        return job;
    }
    let parallel = enlighten_trainer::train::DataParallel::from_env(&config.run)?;
    let options = enlighten_trainer::train::TrainOptions {
        resume,
        progress: true,
        interrupt: interrupt_flag(),
        parallel: parallel.as_ref(),
        ..Default::default()
    };
    let s = enlighten_trainer::train::train(&config, &options)?;
    println!(
        "{}: test {} {:.4}, best val {:.4}, {} steps in {:.1} s ({:.0} samples/s)",
        s.name, s.metric, s.test, s.best_val, s.steps, s.wall_seconds, s.samples_per_second
    );
    if let Some(p) = &parallel {
        let world = s.parallelism.world_size;
        let global = s.parallelism.global_batch;
        println!("rank {} of {world} ({}), global batch {global}", p.rank(), p.backend());
    }
    println!("{}", s.timing);
    match s.ep_end {
        Some(end) => println!("{end}"),
        None => println!("the Enlightenment Period did not end"),
    }
    if !s.skipped_files.is_empty() {
        println!(
            "skipped {} unreadable image files (data.on_bad_file = \"skip\"; listed in summary.json), the first: {}",
            s.skipped_files.len(),
            s.skipped_files[0].display()
        );
    }
    println!("parameters {}", s.parameter_digest);
    println!("{}", run_dir.display());
    Ok(())
}

/// The font rasteriser behind the plots calls `hypotf`, which glibc 2.35 versioned anew; this
/// definition keeps the binary loadable where glibc is 2.34 (the GPU machines'). In f64 the
/// squares of any f32 neither overflow nor lose the f32 result's precision.
#[no_mangle]
pub extern "C" fn hypotf(x: f32, y: f32) -> f32 {
    let (x, y) = (x as f64, y as f64);
    (x * x + y * y).sqrt() as f32
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo { device } => demo::run(device),
        Command::Info => {
            demo::info();
            Ok(())
        }
        Command::Train {
            config,
            resume,
            launch,
            changes,
        } => train(&config, resume, &launch, &changes),
        Command::Compare {
            config,
            strategies,
            seeds,
            launch,
            changes,
        } => compare(&config, strategies, seeds, &launch, &changes),
        Command::Analyze {
            config,
            run,
            steps,
            changes,
        } => {
            let path = config
                .or_else(|| run.map(|r| r.join("config.toml")))
                .unwrap_or_default();
            analyze(&path, steps, &changes)
        }
    };
    match outcome {
        Err(e) => {
            let (status, what) = stop_status(&e);
            eprintln!("{what}: {e}");
            std::process::exit(status);
        }
        // A job whose every rank checkpointed and stopped on the signal (`--nproc`).
        Ok(()) => {
            if let Some(signal) = enlighten_trainer::train::signals::received() {
                use enlighten_trainer::train::signals::{describe, exit_status};
                eprintln!("{}: every rank checkpointed; continue with --resume", describe(signal));
                std::process::exit(exit_status(signal));
            }
        }
    }
}

/// The exit status and the message's prefix of a failed command: a run stopped by SIGTERM after
/// its checkpoint is "preempted" (status 75), by SIGINT "interrupted" (130), else an error (1).
fn stop_status(e: &enlighten_trainer::Error) -> (i32, &'static str) {
    use enlighten_trainer::train::signals::{describe, exit_status, received};
    match (e, received()) {
        (enlighten_trainer::Error::Interrupted { .. }, Some(signal)) => (exit_status(signal), describe(signal)),
        _ => (1, "error"),
    }
}

#[cfg(test)]
mod tests {
    use super::args_without_nproc;

    #[test]
    fn each_rank_runs_the_command_line_without_nproc() {
        let args = [
            "train",
            "--config",
            "c.toml",
            "--nproc",
            "2",
            "--set",
            "a=1",
            "--nproc=3",
            "--resume",
        ];
        let kept = args_without_nproc(args.iter().map(Into::into));
        assert_eq!(kept, ["train", "--config", "c.toml", "--set", "a=1", "--resume"]);
    }
}
