//! The `shoal` binary. The networked runtime (QUIC, sled, HTTP, the demo) is not built
//! yet; today the binary offers the protocol tools that need no runtime.

use std::io::Read;
use std::process::ExitCode;

use shoal_proto::Message;

const USAGE: &str = "usage:
  shoal version
  shoal inspect [--datagram]   decode one wire message from stdin (hex or raw bytes) and print it as JSON";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["version"] | ["--version"] => {
            println!("shoal {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["inspect"] => inspect(false),
        ["inspect", "--datagram"] => inspect(true),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn inspect(datagram: bool) -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("shoal inspect: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let bytes = decode_hex(&input).unwrap_or(input);
    let decoded = if datagram {
        Message::decode_datagram(&bytes)
    } else {
        Message::decode_frame(&bytes)
    };
    match decoded {
        Ok(message) => {
            let json = serde_json::to_string_pretty(&message).expect("messages serialize to JSON");
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal inspect: {} bytes do not decode: {e}", bytes.len());
            ExitCode::from(1)
        }
    }
}

/// Hex text (whitespace ignored) to bytes; `None` if the input is not hex.
fn decode_hex(input: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
