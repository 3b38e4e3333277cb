//! `Backtest`: a policy over a stream's kept chat of the last hours, in
//! dry-run, compared with what the moderators did in that chat; at other
//! sensitivities too, to say which matched them best.

use std::ops::ControlFlow;
use std::sync::Arc;

use spamscope_act::Policies;
use spamscope_act::backtest::{self, BacktestReport, CurvePoint};
use spamscope_bus::subjects;
use spamscope_detect::ScoreModel;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{BacktestRequest, BacktestResponse, ChatEvent};

use crate::kept;
use crate::{Gateway, GatewayError};

/// Hours a backtest reaches back at most (the chat streams keep a day by
/// default).
pub const MAX_HOURS: u32 = 24;
/// Chat events one backtest runs over at most (the newest).
pub const MAX_EVENTS: usize = 300_000;
/// Other sensitivities one backtest tries at most.
pub const MAX_SENSITIVITIES: usize = 8;
/// Longest policy text a request may bring.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// A checked request: the policies, how far back, the sensitivities.
struct Asked {
    policies: Policies,
    hours: u32,
    sensitivities: Vec<f64>,
}

fn check(r: &BacktestRequest, default: &Policies) -> Result<Asked, GatewayError> {
    let invalid = |m: String| GatewayError::Invalid(m);
    let hours = if r.hours == 0 { 1 } else { r.hours };
    if hours > MAX_HOURS {
        return Err(invalid(format!("hours: at most {MAX_HOURS}")));
    }
    if r.sensitivities.len() > MAX_SENSITIVITIES {
        return Err(invalid(format!(
            "sensitivities: at most {MAX_SENSITIVITIES}"
        )));
    }
    if let Some(s) = r
        .sensitivities
        .iter()
        .find(|s| !(s.is_finite() && **s > 0.0))
    {
        return Err(invalid(format!(
            "sensitivities: {s} is not a sensitivity (a number above 0)"
        )));
    }
    if r.policy_toml.len() > MAX_POLICY_BYTES {
        return Err(invalid(format!(
            "policy_toml: at most {MAX_POLICY_BYTES} bytes"
        )));
    }
    let policies = if r.policy_toml.trim().is_empty() {
        default.clone()
    } else {
        Policies::from_toml(&r.policy_toml).map_err(|e| invalid(format!("policy_toml: {e}")))?
    };
    Ok(Asked {
        policies,
        hours,
        sensitivities: r.sensitivities.clone(),
    })
}

/// The kept chat of the last hours.
struct Span {
    events: Vec<ChatEvent>,
    complete: bool,
}

impl Gateway {
    pub async fn backtest(
        &self,
        key: &StreamKey,
        r: &BacktestRequest,
    ) -> Result<BacktestResponse, GatewayError> {
        let asked = check(r, &self.current_policies().await?.0)?;
        let _one = self.backtests.clone().try_acquire_owned().map_err(|_| {
            GatewayError::Exhausted(
                "another backtest is running on this gateway; try again when it ends".into(),
            )
        })?;
        // The stream's detector params, as its detector runs them.
        let params: serde_json::Value =
            serde_json::from_str(&self.params_of(&key.to_string()).await?.effective_json)
                .map_err(|e| GatewayError::Internal(format!("stored params: {e}")))?;
        let span = self.chat_of_last(key, asked.hours).await?;
        let (from_ms, to_ms) = (
            span.events.first().map_or(0, |e| e.ts_ms),
            span.events.last().map_or(0, |e| e.ts_ms),
        );
        let events = span.events.len() as u64;
        let name = key.to_string();
        // A detector run over hours of chat: off the async threads.
        let (report, curve) = tokio::task::spawn_blocking(move || {
            let truth = backtest::truth_of(&span.events);
            let recordings = vec![(name, span.events, truth)];
            let model = Arc::new(ScoreModel::bundled());
            let report: BacktestReport = backtest::run(
                &recordings,
                &asked.policies,
                params.clone(),
                Arc::clone(&model),
            )?;
            let curve: Vec<CurvePoint> = backtest::curve(
                &recordings,
                &asked.policies,
                &params,
                &model,
                &asked.sensitivities,
            )?;
            Ok::<_, spamscope_detect::ParamsError>((report, curve))
        })
        .await
        .map_err(|e| GatewayError::Internal(format!("backtest: {e}")))?
        .map_err(|e| GatewayError::FailedPrecondition(format!("the stream's params: {e}")))?;
        Ok(BacktestResponse {
            report_json: backtest::report_json(&report, &curve).to_string(),
            events,
            from_ms,
            to_ms,
            complete: span.complete,
        })
    }

    /// The kept chat of `key` from `hours` before its newest event (by
    /// chat time, so a replayed archive is measured in its own hours), in
    /// the order it was stored; [`MAX_EVENTS`] at most, the newest.
    async fn chat_of_last(&self, key: &StreamKey, hours: u32) -> Result<Span, GatewayError> {
        let (mut stream, subject) = self.chat_stream(key).await?;
        let Some(end) = Self::chat_end(&stream, &subject).await? else {
            return Err(GatewayError::NotFound(format!(
                "no chat of {key} is kept (the chat streams keep it for --chat-max-age)"
            )));
        };
        let (first, _) = kept::bounds(&mut stream)
            .await
            .map_err(GatewayError::Unavailable)?;
        let span_ms = i64::from(hours) * 3_600_000;
        let mut batches: Vec<Vec<ChatEvent>> = Vec::new();
        let (mut n, mut newest, mut reached) = (0usize, None::<i64>, false);
        kept::scan_back(&stream, first, &subject, end, MAX_EVENTS, |m| {
            let Ok(evs) =
                spamscope_proto::decode_chat(subjects::is_batch(m.headers.as_ref()), m.payload)
            else {
                return ControlFlow::Continue(());
            };
            let newest =
                *newest.get_or_insert_with(|| evs.iter().map(|e| e.ts_ms).max().unwrap_or(0));
            let cutoff = newest - span_ms;
            let all = evs.len();
            let kept: Vec<ChatEvent> = evs.into_iter().filter(|e| e.ts_ms >= cutoff).collect();
            // Chat from before the span: everything after it is in.
            reached |= kept.len() < all;
            n += kept.len();
            batches.push(kept);
            if reached || n >= MAX_EVENTS {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .map_err(GatewayError::Unavailable)?;
        let mut events: Vec<ChatEvent> = batches.into_iter().rev().flatten().collect();
        if events.len() > MAX_EVENTS {
            events.drain(..events.len() - MAX_EVENTS);
        }
        Ok(Span {
            events,
            complete: reached,
        })
    }
}
