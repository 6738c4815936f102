//! The `edgearmor-decode` binary: parse the command line, bind the metrics port, build
//! the sinks, then decode from the broker until SIGINT/SIGTERM or from a capture file
//! until its end; the sinks are closed (the syslog queue drained) and the counters go to
//! stderr at exit. Exit status: 0 when stopped by a signal or at the end of the input, 1
//! for a bad command line, unusable files, a taken metrics port or a fatal connection
//! error.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use edgearmor_decode::capture::CaptureReader;
use edgearmor_decode::cli::{self, Command, Config, Source};
use edgearmor_decode::counters::format_pairs;
use edgearmor_decode::forward::SyslogSink;
use edgearmor_decode::http::{HttpStats, MetricsServer};
use edgearmor_decode::mqtt::{self, LiveStats, MetricsLink, MqttJsonSink};
use edgearmor_decode::pipeline::{Decoder, HandleError, Received};
use edgearmor_decode::sink::{AlertSink, FanOut, RotatingFileSink, StdoutSink};
use edgearmor_decode::soc::{CefLines, Format};
use edgearmor_mqtt::ErrorChain;
use log::{debug, error, warn};
use std::sync::Arc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("edgearmor-decode {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("edgearmor-decode: {e}\nRun edgearmor-decode --help for the options.");
            return ExitCode::FAILURE;
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("edgearmor-decode: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A line output in the configured format.
fn lines<S: AlertSink + 'static>(format: Format, sink: S) -> Box<dyn AlertSink> {
    match format {
        Format::Json => Box::new(sink),
        Format::Cef => Box::new(CefLines::new(sink)),
    }
}

/// The configured file, stdout and syslog sinks (the MQTT one needs the client: added later).
fn local_sinks(config: &Config) -> Result<FanOut, String> {
    let mut sinks = FanOut::default();
    let format = config.output.format;
    if config.output.stdout {
        sinks.sinks.push(lines(format, StdoutSink::new()));
    }
    if let Some(file) = &config.output.file {
        let sink = RotatingFileSink::open(&file.path, file.rotate_bytes, file.keep)
            .map_err(|e| e.to_string())?;
        sinks.sinks.push(lines(format, sink));
    }
    if let Some(syslog) = &config.output.syslog {
        let sink = SyslogSink::start(syslog).map_err(|e| ErrorChain(&e).to_string())?;
        sinks.sinks.push(Box::new(sink));
    }
    Ok(sinks)
}

fn run(config: &Config) -> Result<(), String> {
    // Bound first: a taken port is an error before anything connects.
    let metrics = config
        .metrics
        .map(|address| {
            MetricsServer::bind(address).map_err(|e| format!("--metrics {address}: {e}"))
        })
        .transpose()?;
    let mut sinks = local_sinks(config)?;
    let mut decoder = Decoder::new(config.decoder_config());
    match &config.source {
        Source::Capture(path) => {
            let result = decode_capture(path, &mut decoder, &mut sinks);
            sinks.close();
            print_counters(&decoder, &sinks, None);
            result
        }
        Source::Broker(broker) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting the async runtime: {e}"))?;
            let mut stats = LiveStats::default();
            let http_stats = Arc::new(HttpStats::default());
            let result = runtime.block_on(async {
                let metrics_link = match metrics {
                    Some(server) => {
                        let scrapes = server
                            .spawn(http_stats.clone())
                            .map_err(|e| format!("--metrics: {e}"))?;
                        Some(MetricsLink {
                            scrapes,
                            stats: http_stats.clone(),
                        })
                    }
                    None => None,
                };
                // The client must be created inside the runtime (its queue uses it).
                let (client, connection) =
                    mqtt::connect(broker).map_err(|e| ErrorChain(&e).to_string())?;
                if config.output.publish_json {
                    sinks.sinks.push(Box::new(MqttJsonSink::new(
                        client.clone(),
                        &config.topic_prefix,
                        &stats,
                    )));
                }
                mqtt::run(
                    broker,
                    &config.topic_prefix,
                    &mut decoder,
                    &mut sinks,
                    client,
                    connection,
                    &mut stats,
                    metrics_link,
                )
                .await
                .map_err(|e| ErrorChain(&e).to_string())
            });
            sinks.close();
            print_counters(&decoder, &sinks, Some((&stats, &http_stats)));
            result
        }
    }
}

fn decode_capture(path: &Path, decoder: &mut Decoder, sink: &mut FanOut) -> Result<(), String> {
    let input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    let mut reader = CaptureReader::new(BufReader::new(input));
    let outcome = loop {
        let message = match reader.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("{}: {e}", path.display())),
        };
        let received = Received {
            topic: &message.topic,
            payload: &message.payload,
            retained: message.retained,
            // The capture's own clock: the reorder window replays as it happened.
            now_us: message.received_us,
        };
        match decoder.handle(&received, sink) {
            Ok(accepted) => debug!("{}: {accepted:?}", message.topic),
            Err(HandleError::Rejected(r)) => warn!(
                "{}: skipped a {}-byte payload: {r} [{}]",
                message.topic,
                message.payload.len(),
                r.kind()
            ),
            Err(HandleError::Output(e)) if e.is_fatal() => break Err(e.to_string()),
            Err(HandleError::Output(e)) => error!("{e}"),
        }
        if let Err(e) = decoder.tick(message.received_us, sink) {
            error!("{e}");
        }
    };
    // Even after a damaged record, what was decoded so far is reported complete.
    if let Err(e) = decoder.finish(sink).and_then(|()| sink.flush()) {
        error!("{e}");
    }
    outcome
}

fn print_counters(decoder: &Decoder, sinks: &FanOut, live: Option<(&LiveStats, &HttpStats)>) {
    let pairs = match live {
        Some((live, http)) => mqtt::all_pairs(decoder, sinks, live, Some(http)),
        None => {
            let mut pairs = decoder.counters().pairs();
            pairs.extend(sinks.stats());
            pairs
        }
    };
    eprintln!("edgearmor-decode: counters: {}", format_pairs(&pairs));
}
