use std::process::ExitCode;

use iamlet::config::{Config, ConfigError};

fn main() -> ExitCode {
    let config = match Config::parse(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        // --help and --version are clap "errors" that print to stdout and exit 0.
        Err(ConfigError::Clap(error)) => error.exit(),
        Err(error) => {
            eprintln!("iamlet: {error}");
            return ExitCode::from(2);
        }
    };
    iamlet::telemetry::init(&config.log_format, config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("iamlet: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(iamlet::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "iamlet failed");
            ExitCode::from(error.exit_code())
        }
    }
}
