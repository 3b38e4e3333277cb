//! Prints detector outputs arriving on SPAM, as `spamscope replay` does
//! (spam events and decisions; not the per-message scores).

use futures::StreamExt;
use prost::Message;
use spamscope_bus::{Bus, subjects};
use spamscope_proto::v1::{DetectorOutput, detector_output};
use tokio_util::sync::CancellationToken;

pub async fn print_outputs(bus: Bus, stop: CancellationToken) {
    let Ok(mut sub) = bus.client.subscribe(subjects::SPAM_ALL).await else {
        return;
    };
    let mut out = std::io::stdout();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        if let Ok(o) = DetectorOutput::decode(msg.payload)
            && !matches!(o.kind, Some(detector_output::Kind::MessageScore(_)))
        {
            let _ = crate::cmd::replay::print_row(&mut out, &o);
        }
    }
}
