//! The `enlighten` command line.

mod demo;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "enlighten", version, about = "Enlightenment Period training strategies: fused ops, strategy engine, trainer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when the probe finds it, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Command {
    /// Run every op on the CPU (and CUDA when present), check each against its f64 reference and
    /// time it against the tch composite; prints a table and fails if any check fails.
    Demo {
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Print what this build and machine offer: versions, the CUDA probe, embedded kernels.
    Info,
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo { device } => demo::run(device),
        Command::Info => {
            demo::info();
            Ok(())
        }
    };
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
