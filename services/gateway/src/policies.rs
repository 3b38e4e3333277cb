//! Channel policies set at run time: a layer per channel, kept in the
//! state store over the policy file, applied by the detectors when the
//! gateway announces it (`ctl.policies`).

use std::collections::BTreeMap;

use spamscope_act::Policies;
use spamscope_bus::subjects;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::ChannelPolicy;

use crate::{Gateway, GatewayError};

/// Longest policy layer accepted.
pub const MAX_LAYER_BYTES: usize = 16 * 1024;

impl Gateway {
    /// The policies in effect: the file's, with the stored layers over it.
    /// A stored layer that no longer applies (set against another file)
    /// is left out, as the detectors leave it.
    pub(crate) async fn current_policies(
        &self,
    ) -> Result<(Policies, BTreeMap<String, String>), GatewayError> {
        let stored = self.store.all_policies().await?;
        let p = self
            .policies
            .with_stored(&stored)
            .unwrap_or_else(|_| (*self.policies).clone());
        Ok((p, stored))
    }

    pub async fn channel_policy(&self, key: &StreamKey) -> Result<ChannelPolicy, GatewayError> {
        let (p, stored) = self.current_policies().await?;
        let stream = key.to_string();
        Ok(ChannelPolicy {
            stored_toml: stored.get(&stream).cloned().unwrap_or_default(),
            effective_toml: p.of(&stream).to_toml(),
            stream,
        })
    }

    /// Checks `toml` as `key`'s layer over the file, stores it (empty:
    /// removes it) and announces it to the detectors.
    pub async fn set_channel_policy(
        &self,
        key: &StreamKey,
        toml: &str,
    ) -> Result<ChannelPolicy, GatewayError> {
        if toml.len() > MAX_LAYER_BYTES {
            return Err(GatewayError::Invalid(format!(
                "policy_toml: at most {MAX_LAYER_BYTES} bytes"
            )));
        }
        let stream = key.to_string();
        let one: BTreeMap<String, String> = [(stream.clone(), toml.to_owned())].into();
        self.policies
            .with_stored(&one)
            .map_err(|e| GatewayError::Invalid(format!("policy_toml: {e}")))?;
        self.store.set_policy(&stream, toml).await?;
        self.bus
            .client
            .publish(subjects::CTL_POLICIES, stream.clone().into())
            .await
            .map_err(|e| GatewayError::Unavailable(format!("NATS: {e}")))?;
        self.channel_policy(key).await
    }
}
