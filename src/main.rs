use std::process::ExitCode;

use iamlet::config::{ConfigError, Invocation};

fn main() -> ExitCode {
    let invocation = match Invocation::parse(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(invocation) => invocation,
        // --help and --version are clap "errors" that print to stdout and exit 0.
        Err(ConfigError::Clap(error)) => error.exit(),
        Err(error) => {
            eprintln!("iamlet: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match invocation {
        Invocation::Cleanup {
            log_format,
            log_level,
        } => {
            let logs = iamlet::telemetry::init(&log_format, log_level);
            let result = iamlet::app::cleanup();
            if let Err(error) = &result {
                tracing::error!(%error, "iamlet cleanup failed");
            }
            drop(logs);
            result
        }
        Invocation::Explain {
            query,
            agent,
            agent_given,
            json,
        } => {
            let agent = match agent_given {
                true => agent,
                false => iamlet::explain::client::running_agent().unwrap_or(agent),
            };
            return explain(&query, &agent, json);
        }
        Invocation::Run(config) => {
            let logs = iamlet::telemetry::init(&config.log_format, config.log_level);
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
            let result = runtime.block_on(iamlet::app::run(*config));
            if let Err(error) = &result {
                tracing::error!(%error, "iamlet failed");
            }
            // Flush the queued log lines before the process exits.
            drop(logs);
            result
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(error.exit_code()),
    }
}

/// `iamlet explain`: 0 granted or allowed, 1 refused, 3 no answer.
fn explain(query: &iamlet::explain::Query, agent: &str, json: bool) -> ExitCode {
    use iamlet::explain::client;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("iamlet: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(client::ask(agent, query)) {
        Ok(answer) => {
            if json {
                println!("{answer:#}");
            } else {
                println!("{}", client::render(&answer));
            }
            match client::outcome(&answer) {
                client::Outcome::Entitled => ExitCode::SUCCESS,
                client::Outcome::Refused => ExitCode::from(1),
            }
        }
        Err(error) => {
            eprintln!("iamlet explain: {error}");
            ExitCode::from(3)
        }
    }
}
