//! One fresh, migrated database per test.

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use secrecy::SecretString;
use stripe_sync::config::DatabaseConfig;
use stripe_sync::db::{self, PgPool};

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
}

impl TestDb {
    pub fn migrated() -> Self {
        let db = Self::empty();
        db::run_migrations(&db.pool).expect("migrations run");
        db
    }

    /// A database with no tables, for start-up refusal tests.
    pub fn empty() -> Self {
        let admin_url = super::required_env("TEST_PG_ADMIN_URL");
        let name = super::unique("ssync");
        let mut admin = PgConnection::establish(&admin_url).expect("connect to the admin database");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_PG_ADMIN_URL must end in /<database>"),
        };
        let pool = db::pool(&DatabaseConfig {
            url: SecretString::from(url.clone()),
            pool_size: 8,
        });
        Self {
            name,
            url,
            pool,
            admin_url,
        }
    }

    pub fn conn(&self) -> db::PgConn {
        self.pool.get().expect("a test connection")
    }

    pub fn count(&self, sql_from_where: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {sql_from_where}"))
            .get_result::<Count>(&mut self.conn())
            .unwrap()
            .n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Close our pool's connections first, then drop (best effort).
        let pool = std::mem::replace(
            &mut self.pool,
            Pool::builder()
                .max_size(1)
                .build_unchecked(ConnectionManager::new("")),
        );
        drop(pool);
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}
