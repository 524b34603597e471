//! The configurations changed through the API (`hub::configs`).

use super::{Store, StoreError, db};
use sqlx::Row;

impl Store {
    /// Every configuration stored: `(name, JSON value)`.
    pub async fn configurations(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, value FROM configurations")
            .fetch_all(&self.pool)
            .await
            .map_err(db("read the configurations"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Stores `(name, JSON value)` pairs, in one transaction.
    pub async fn set_configurations(&self, values: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for (name, value) in values {
            sqlx::query(
                "INSERT INTO configurations (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db("store a configuration"))?;
        }
        tx.commit().await.map_err(db("commit the configurations"))?;
        Ok(())
    }
}
