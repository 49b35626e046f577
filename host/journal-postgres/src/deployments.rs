//! Deployed components in `stead_deployments`, shared by every node of the
//! database: a deploy on any node inserts a row; every node polls for rows
//! past the last it loaded.
//!
//! Invariant: sequence numbers become visible in order. A deploy takes an
//! exclusive advisory lock for its transaction, so two deploys commit one
//! after the other and a poller that has seen `seq` never misses a smaller
//! one committed later.

use stead_journal::{DeploymentStore, JournalError, StoredDeployment};

use crate::PostgresJournal;
use crate::schema::{DEPLOY_LOCK, LOCK_NAMESPACE};

fn row(row: &tokio_postgres::Row) -> Result<StoredDeployment, JournalError> {
    Ok(StoredDeployment {
        seq: crate::to_u64(row.get(0), "stead_deployments.seq")?,
        type_name: row.get(1),
        sha256: row.get(2),
        component: row.get(3),
    })
}

impl DeploymentStore for PostgresJournal {
    fn publish(
        &self,
        type_name: &str,
        sha256: &str,
        component: &[u8],
    ) -> Result<u64, JournalError> {
        self.run("storing a deployment", async {
            let shared = &self.shared;
            let err = |e: tokio_postgres::Error| shared.error("storing a deployment", &e);
            let mut client = shared.client().await?;
            let tx = client.transaction().await.map_err(err)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NAMESPACE, &DEPLOY_LOCK],
            )
            .await
            .map_err(err)?;
            let inserted = tx
                .query_one(
                    "INSERT INTO stead_deployments (type_name, sha256, component)
                     VALUES ($1, $2, $3) RETURNING seq",
                    &[&type_name, &sha256, &component],
                )
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            crate::to_u64(inserted.get(0), "stead_deployments.seq")
        })
    }

    fn latest(&self) -> Result<Vec<StoredDeployment>, JournalError> {
        self.run("reading deployments", async {
            let client = self.shared.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT ON (type_name) seq, type_name, sha256, component
                     FROM stead_deployments ORDER BY type_name, seq DESC",
                    &[],
                )
                .await
                .map_err(|e| self.shared.error("reading deployments", &e))?;
            rows.iter().map(row).collect()
        })
    }

    fn since(&self, after: u64) -> Result<Vec<StoredDeployment>, JournalError> {
        self.run("reading new deployments", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT seq, type_name, sha256, component FROM stead_deployments
                     WHERE seq > $1 ORDER BY seq",
                )
                .await
                .map_err(|e| self.shared.error("reading new deployments", &e))?;
            let rows = client
                .query(&statement, &[&crate::to_i64(after)])
                .await
                .map_err(|e| self.shared.error("reading new deployments", &e))?;
            rows.iter().map(row).collect()
        })
    }
}
