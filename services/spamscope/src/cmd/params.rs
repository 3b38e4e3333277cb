//! `--params FILE` / `--param KEY=VALUE`: a layer over the detector defaults.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::exit::Exit;

#[derive(Debug, Clone, clap::Args)]
pub struct ParamsArgs {
    /// JSON object of detector params overriding the defaults (see README).
    #[arg(long, value_name = "FILE", env = "SPAMSCOPE_PARAMS_FILE")]
    pub params: Option<PathBuf>,
    /// One param, KEY=VALUE with VALUE in JSON (`--param sensitivity=2`).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub param: Vec<String>,
}

impl ParamsArgs {
    /// The layer these flags describe; bad input exits 64 naming the key.
    pub fn layer(&self) -> Result<Value> {
        let mut obj = match &self.params {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Exit::usage(format!("--params {}: cannot read: {e}", path.display()))
                })?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => o,
                    Ok(_) => {
                        return Err(Exit::usage(format!(
                            "--params {}: not a JSON object",
                            path.display()
                        )));
                    }
                    Err(e) => {
                        return Err(Exit::usage(format!("--params {}: {e}", path.display())));
                    }
                }
            }
            None => Map::new(),
        };
        for kv in &self.param {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Exit::usage(format!("--param {kv:?}: expected KEY=VALUE")))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            obj.insert(k.trim().to_owned(), value);
        }
        let layer = Value::Object(obj);
        spamscope_detect::DetectorParams::layered(&[&layer])
            .map_err(|e| Exit::usage(e.to_string()))?;
        Ok(layer)
    }
}
