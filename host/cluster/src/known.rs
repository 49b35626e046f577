//! What the router and the peer service both check before running a
//! request: the entity's type is deployed (looking in the shared deploys
//! first when it is not known here yet) and its id valid.

use std::sync::Arc;

use stead_node::{Node, NodeError};
use stead_types::ShardId;

/// The entity's shard, once its type is known here: a type unknown here
/// may have just been deployed on another node, so the shared deploys are
/// read (at most once per 100 ms, see `Node::refresh_deployments`) before
/// the type is called unknown.
pub(crate) async fn known_entity(
    node: &Arc<Node>,
    entity_type: &str,
    entity_id: &str,
) -> Result<ShardId, NodeError> {
    match node.check_entity(entity_type, entity_id) {
        Err(NodeError::UnknownType(_)) => {
            let refreshing = node.clone();
            tokio::task::spawn_blocking(move || refreshing.refresh_deployments())
                .await
                .map_err(|e| NodeError::Internal(format!("loading deploys: {e}")))??;
            node.check_entity(entity_type, entity_id)
        }
        checked => checked,
    }
}
