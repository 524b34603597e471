//! Users and their client keys (API keys).

use super::{Store, StoreError, db, now_us};
use sqlx::Row;

/// A user as authentication needs it.
#[derive(Clone, Debug)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// May manage users' keys and everything else.
    pub is_admin: bool,
}

/// A client key as listed (never its secret).
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// Row id.
    pub id: i64,
    /// The name its owner gave it.
    pub name: String,
    /// The public part of the key (before the dot).
    pub prefix: String,
    /// BLAKE3 of the secret part, hex.
    pub secret_hash: String,
    /// Its owner.
    pub user_id: i64,
    /// Its owner's name.
    pub username: String,
}

impl Store {
    /// Creates or replaces (the password of) a user.
    pub async fn put_user(&self, username: &str, password_hash: &str, is_admin: bool) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, is_admin, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, is_admin = excluded.is_admin
             RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(is_admin as i64)
        .bind(now_us())
        .fetch_one(&self.pool)
        .await
        .map_err(db("write a user"))?;
        Ok(row.get(0))
    }

    /// The user called `username`.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, username, password_hash, is_admin FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a user"))?;
        Ok(row.map(|r| user(&r)))
    }

    /// The user with row id `id`.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, username, password_hash, is_admin FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a user"))?;
        Ok(row.map(|r| user(&r)))
    }

    /// Records a client key.
    pub async fn add_clientkey(
        &self,
        name: &str,
        prefix: &str,
        secret_hash: &str,
        user_id: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO clientkeys (name, prefix, secret_hash, user_id, created) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(prefix)
        .bind(secret_hash)
        .bind(user_id)
        .bind(now_us())
        .fetch_one(&self.pool)
        .await
        .map_err(db("write a client key"))?;
        Ok(row.get(0))
    }

    /// Client keys, all or `user_id`'s, oldest first.
    pub async fn clientkeys(&self, user_id: Option<i64>) -> Result<Vec<ClientKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.id, k.name, k.prefix, k.secret_hash, k.user_id, u.username FROM clientkeys k JOIN users u ON u.id = k.user_id
             WHERE $1 < 0 OR k.user_id = $1 ORDER BY k.id",
        )
        .bind(user_id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list client keys"))?;
        Ok(rows.iter().map(clientkey).collect())
    }

    /// The client key with public part `prefix`.
    pub async fn clientkey_by_prefix(&self, prefix: &str) -> Result<Option<ClientKey>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.name, k.prefix, k.secret_hash, k.user_id, u.username FROM clientkeys k JOIN users u ON u.id = k.user_id WHERE k.prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read a client key"))?;
        Ok(row.as_ref().map(clientkey))
    }

    /// Revokes a client key; whether it existed (and was `user_id`'s,
    /// when given).
    pub async fn delete_clientkey(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM clientkeys WHERE id = $1 AND ($2 < 0 OR user_id = $2)")
            .bind(id)
            .bind(user_id.unwrap_or(-1))
            .execute(&self.pool)
            .await
            .map_err(db("delete a client key"))?;
        Ok(done.rows_affected() > 0)
    }
}

fn user(r: &sqlx::any::AnyRow) -> User {
    User {
        id: r.get("id"),
        username: r.get("username"),
        password_hash: r.get("password_hash"),
        is_admin: r.get::<i64, _>("is_admin") != 0,
    }
}

fn clientkey(r: &sqlx::any::AnyRow) -> ClientKey {
    ClientKey {
        id: r.get("id"),
        name: r.get("name"),
        prefix: r.get("prefix"),
        secret_hash: r.get("secret_hash"),
        user_id: r.get("user_id"),
        username: r.get("username"),
    }
}
