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

    /// Starts logging every write of a customer row (a trigger into
    /// `test_customer_writes`), so a test counts applications, not only
    /// ledger rows (whose primary key makes "once per event id" true by
    /// construction).
    pub fn log_customer_writes(&self) {
        diesel::connection::SimpleConnection::batch_execute(
            &mut *self.conn(),
            "CREATE TABLE test_customer_writes (customer_id uuid NOT NULL, name text); \
             CREATE FUNCTION test_log_customer_write() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO test_customer_writes VALUES (NEW.id, NEW.name); RETURN NULL; END $$; \
             CREATE TRIGGER test_customer_writes AFTER INSERT OR UPDATE ON customers \
             FOR EACH ROW EXECUTE FUNCTION test_log_customer_write();",
        )
        .unwrap();
    }

    /// Named customer states written more than once: an event whose effect
    /// was applied twice writes its state again (each test event sets a
    /// name no other event sets; unnamed rows, such as API creates and
    /// their echoes, are not counted).
    pub fn customer_rewrites(&self) -> i64 {
        self.count(
            "(SELECT customer_id, name FROM test_customer_writes WHERE name IS NOT NULL \
              GROUP BY customer_id, name HAVING count(*) > 1) twice",
        )
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
