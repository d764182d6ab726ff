//! Every environment variable a process of ours reads, in one table: the
//! configuration page of the docs (`docs/src/configuration.md`) is this
//! table rendered ([`markdown`]), and a test fails when the code reads a
//! variable without a row here, when a row names one nothing reads, or
//! when the page differs from the render.

/// One row of the reference.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The variable, or variables set together.
    pub names: &'static [&'static str],
    /// The processes that read it.
    pub used_by: &'static str,
    /// What holds when it is unset (markdown).
    pub default: &'static str,
    /// What it does (markdown).
    pub meaning: &'static str,
}

/// Variables read by a library rather than by our configuration code
/// (`RUST_LOG` by tracing-subscriber's filter, `MALLOC_ARENA_MAX` by
/// glibc), so no `Env` lookup names them.
pub const READ_ELSEWHERE: &[&str] = &["RUST_LOG", "MALLOC_ARENA_MAX"];

pub const VARIABLES: &[Variable] = &[
    Variable {
        names: &["DATABASE_URL"],
        used_by: "all",
        default: "**required**",
        meaning: "Postgres URL",
    },
    Variable {
        names: &["KAFKA_BROKERS"],
        used_by: "serve, worker",
        default: "**required**",
        meaning: "bootstrap servers, `host:port[,…]`",
    },
    Variable {
        names: &["STRIPE_WEBHOOK_SECRET"],
        used_by: "serve",
        default: "**required**",
        meaning: "signing secret(s), comma-separated during rotation",
    },
    Variable {
        names: &["API_TOKEN"],
        used_by: "serve",
        default: "**required**",
        meaning: "bearer token for `/api/*` except `/api/admin/*` (≥ 16 characters)",
    },
    Variable {
        names: &["ADMIN_TOKEN"],
        used_by: "serve",
        default: "unset: the admin API answers `403 admin_disabled` and `/console` is 404",
        meaning: "bearer token for `/api/admin/*` (dead-letter replays, email retries, topics and lag, credit packages and credit adjustments), and the login of the operator's console at `/console`; ≥ 16 characters, not `API_TOKEN`. Neither token opens the other's routes; changing it ends every console session",
    },
    Variable {
        names: &["CONSOLE_PROCESSES"],
        used_by: "serve",
        default: "each worker at its default `METRICS_ADDR` on 127.0.0.1 (`:9101`–`:9105`, and `:9106`–`:9107` when Salesforce is configured)",
        meaning: "the processes whose `/readyz` the console's overview and `GET /api/admin/overview` read, as `name=http://host:port,…` (each process's `METRICS_ADDR`); `none` for none. serve always shows itself",
    },
    Variable {
        names: &["STRIPE_API_KEY"],
        used_by: "stripe-inbound, stripe-outbound, order-notifier, stripe-commands, pull commands, `resync`, `webhooks`; serve (optional: the payments and credits APIs, `/api/admin/resync`)",
        default: "**required** (serve: optional)",
        meaning: "secret key: re-reads on same-second ties, child lists the payload leaves out, pull commands, and writes (`webhooks install` needs write access to webhook endpoints)",
    },
    Variable {
        names: &["LISTEN_ADDR"],
        used_by: "serve",
        default: "`127.0.0.1:8080`",
        meaning: "`host:port` to listen on",
    },
    Variable {
        names: &["STRIPE_API_BASE"],
        used_by: "stripe-inbound, stripe-outbound",
        default: "`https://api.stripe.com`",
        meaning: "Stripe API base URL (point at a fake offline)",
    },
    Variable {
        names: &["STRIPE_API_VERSION"],
        used_by: "stripe-inbound, stripe-outbound",
        default: "`2024-06-20`",
        meaning: "`Stripe-Version` pinned on every call; a webhook of another version is counted (`stripe_sync_event_api_version_mismatches_total`) and logged",
    },
    Variable {
        names: &["STRIPE_EVENTS_RETENTION"],
        used_by: "stripe-inbound, prune",
        default: "`30d`",
        meaning: "how long `stripe.events` keeps each raw event Stripe sent (`90d`, `12h`; `off`: none kept, and `prune` empties it)",
    },
    Variable {
        names: &["STRIPE_API_TIMEOUT_MS"],
        used_by: "stripe-inbound, stripe-outbound",
        default: "`10000`",
        meaning: "timeout of one Stripe call",
    },
    Variable {
        names: &["STRIPE_WEBHOOK_TOLERANCE_SECS"],
        used_by: "serve",
        default: "`300`",
        meaning: "allowed signature age, past and future",
    },
    Variable {
        names: &["WEBHOOK_MAX_BODY_BYTES"],
        used_by: "serve",
        default: "`1048576`",
        meaning: "larger bodies get 413; serve refuses to start unless this plus 65536 (the envelope) fits in `KAFKA_FETCH_MAX_BYTES`",
    },
    Variable {
        names: &["STRIPE_EVENTS_TOPIC"],
        used_by: "serve, stripe-inbound",
        default: "`stripe.events.v1`",
        meaning: "events topic; dead letters go to `<topic>.dlq`",
    },
    Variable {
        names: &["CUSTOMER_CHANGES_TOPIC"],
        used_by: "outbox-relay, stripe-outbound",
        default: "`customers.changes.v1`",
        meaning: "local changes; dead letters go to `<topic>.dlq`",
    },
    Variable {
        names: &["KAFKA_TOPIC_PARTITIONS"],
        used_by: "serve, workers",
        default: "`6`",
        meaning: "partitions of topics created at start-up",
    },
    Variable {
        names: &["KAFKA_REPLICATION_FACTOR"],
        used_by: "serve, workers",
        default: "`1`",
        meaning: "replication of topics created at start-up (3 on a real cluster)",
    },
    Variable {
        names: &["KAFKA_PRODUCE_TIMEOUT_MS"],
        used_by: "serve, workers",
        default: "`5000`",
        meaning: "wait for the broker's ack (the webhook answers 503 after it)",
    },
    Variable {
        names: &["KAFKA_FETCH_WAIT_MS"],
        used_by: "workers",
        default: "`50`",
        meaning: "longest the broker may hold an empty fetch; on brokers that poll (nisshi) up to half of it is added to the latency of an event that finds the worker idle. nisshi on sqlite also stops reading a fetch in one query when the wait runs out and reads the rest a record at a time, so with a much shorter wait a worker behind on a backlog costs the broker more CPU per event and stays behind",
    },
    Variable {
        names: &["KAFKA_FETCH_MAX_BYTES"],
        used_by: "serve, workers",
        default: "`1114112`",
        meaning: "most bytes one fetch returns, counted as the broker stores batches (compressed); bounds a worker's memory, and must hold the largest message, since nisshi never returns a message larger than a fetch (set the same value for every process)",
    },
    Variable {
        names: &["INBOUND_CONSUMER_GROUP"],
        used_by: "stripe-inbound",
        default: "`stripe-sync.stripe-inbound`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["KAFKA_COMPRESSION"],
        used_by: "serve, workers",
        default: "`none`",
        meaning: "how producers compress batches: `none`, `lz4`, `zstd`, `gzip`, `snappy`. A fetch's limit counts batches as stored, so with compression one fetch decompresses to 3–28 times `KAFKA_FETCH_MAX_BYTES` in a worker; `none` keeps a worker's memory where the limit says (see [Benchmark](performance.md)). On a cluster that pays for bytes, `lz4` or `zstd` with the workers' memory budgeted for it",
    },
    Variable {
        names: &["INBOUND_BATCH_SIZE"],
        used_by: "stripe-inbound",
        default: "`1000`",
        meaning: "most events per batch of a lane (one transaction each), at most 5000; small events reach it before `INBOUND_BATCH_BYTES`",
    },
    Variable {
        names: &["INBOUND_BATCH_BYTES"],
        used_by: "stripe-inbound",
        default: "`524288` (512 KiB)",
        meaning: "payload bytes that end a batch of a lane: the event that reaches them is the batch's last, so a batch exceeds them by less than one event. A lane's memory follows it (its parsed objects and binds): the default holds about 600 customer updates or 200 events of a mix of payments, charges and invoices. What a lane has fetched beyond its batch is bounded by its share of the 4 MiB prefetch (plus one fetch), not by this",
    },
    Variable {
        names: &["INBOUND_BATCH_WAIT_MS"],
        used_by: "stripe-inbound",
        default: "`5`",
        meaning: "how long to wait to fill a batch",
    },
    Variable {
        names: &["INBOUND_APPLY_LANES"],
        used_by: "stripe-inbound",
        default: "one per core (at most `DATABASE_POOL_SIZE`)",
        meaning: "lanes applying at once, each with its own prefetch queue, batches, transactions and connection and never waiting for the others (a partition always goes to the same lane, so per-object order holds); at most `DATABASE_POOL_SIZE`, and no more are used than the topic has partitions; see [Benchmark](performance.md) for what they bring and cost",
    },
    Variable {
        names: &["OUTBOX_POLL_MS"],
        used_by: "outbox-relay",
        default: "`100`",
        meaning: "idle poll interval for new outbox rows",
    },
    Variable {
        names: &["OUTBOX_BATCH_SIZE"],
        used_by: "outbox-relay",
        default: "`500`",
        meaning: "most rows published per round",
    },
    Variable {
        names: &["OUTBOUND_CONSUMER_GROUP"],
        used_by: "stripe-outbound",
        default: "`stripe-sync.stripe-outbound`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["SMTP_URL"],
        used_by: "order-notifier",
        default: "**required** there",
        meaning: "`smtp://host:port` (plain), `smtp+starttls://user:pass@host:587`, `smtps://user:pass@host:465`; user and password percent-encoded",
    },
    Variable {
        names: &["NOTIFY_EMAIL_FROM"],
        used_by: "order-notifier",
        default: "**required** there",
        meaning: "sender, `Shop <orders@shop.example>`; its domain ends every `Message-ID`",
    },
    Variable {
        names: &["NOTIFY_EMAIL_TO"],
        used_by: "order-notifier",
        default: "**required** there",
        meaning: "recipients, comma-separated",
    },
    Variable {
        names: &["NOTIFY_PRODUCT_IDS"],
        used_by: "order-notifier",
        default: "all products",
        meaning: "only orders with a line item of one of these products (`prod_…`, comma-separated)",
    },
    Variable {
        names: &["NOTIFIER_CONSUMER_GROUP"],
        used_by: "order-notifier",
        default: "`stripe-sync.order-notifier`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["STRIPE_COMMANDS_TOPIC"],
        used_by: "serve (admin), outbox-relay, stripe-commands",
        default: "`stripe.commands.v1`",
        meaning: "queued refunds; dead letters go to `<topic>.dlq`",
    },
    Variable {
        names: &["COMMANDS_CONSUMER_GROUP"],
        used_by: "stripe-commands",
        default: "`stripe-sync.stripe-commands`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["NOTIFY_POLL_MS"],
        used_by: "order-notifier",
        default: "`500`",
        meaning: "how often the sender looks for due emails when nothing woke it",
    },
    Variable {
        names: &["NOTIFY_RETRY_MAX_MS"],
        used_by: "order-notifier",
        default: "`300000`",
        meaning: "longest wait between two attempts at one email (it doubles from 1 s)",
    },
    Variable {
        names: &["NOTIFY_LEASE_MS"],
        used_by: "order-notifier",
        default: "`60000`",
        meaning: "how long an email being sent is its sender's alone (≥ 2000), renewed right before the message goes out; after a crash, how long until it is taken again. Each half of one SMTP delivery (up to the recipients; the message) times out after half of it, at most 20 s",
    },
    Variable {
        names: &["NOTIFY_UNKNOWN_OUTCOME_WAIT_MS"],
        used_by: "order-notifier",
        default: "`600000`",
        meaning: "wait before trying an email again whose message went out and got no answer within the timeout (the server may have it); RFC 5321 §4.5.3.2.6 gives a server 10 minutes to answer the end of a message",
    },
    Variable {
        names: &["STRIPE_PLATFORMS"],
        used_by: "serve, stripe-inbound, stripe-outbound, order-notifier, pull commands, `resync`",
        default: "unset: one platform account",
        meaning: "further, unrelated platform accounts served by the same deployment: `acct_…:API_KEY[:WHSEC,…]` entries separated by `;`. Each platform's own objects are kept under its `acct_…` id (the first platform's under `platform`), its webhooks come in at `/webhooks/stripe` (its secret tells it apart) or `/webhooks/stripe/{acct_…}`, and its objects and its connected accounts' are read with its key ([Several platform accounts](operations.md#several-platform-accounts))",
    },
    Variable {
        names: &["STRIPE_ACCOUNTS"],
        used_by: "backfill, reconcile, refresh, diff",
        default: "`platform`",
        meaning: "accounts the pull commands cover without `--account`: `platform`, `acct_…` and/or `auto` (each platform and every connected account `stripe.accounts` holds authorized, read again at each pass of `--every`; `reconcile --every` backfills each one found once), comma-separated",
    },
    Variable {
        names: &["STRIPE_RATE_LIMIT"],
        used_by: "everything that calls Stripe",
        default: "`20`",
        meaning: "requests per second per process (0: unlimited)",
    },
    Variable {
        names: &["SALESFORCE_INSTANCE_URL"],
        used_by: "salesforce-outbound, salesforce-inbound, stripe-inbound (passes Stripe's changes on when set)",
        default: "unset: the Salesforce adapter is off",
        meaning: "the org's My Domain URL (`https://acme.my.salesforce.com`); the OAuth token is asked for there, API calls go to the token answer's `instance_url`",
    },
    Variable {
        names: &["SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET"],
        used_by: "salesforce-outbound, salesforce-inbound",
        default: "**required** with the URL",
        meaning: "the connected app's consumer key and secret (OAuth 2.0 client credentials, with a run-as user)",
    },
    Variable {
        names: &["SALESFORCE_API_VERSION"],
        used_by: "salesforce-outbound, salesforce-inbound",
        default: "`61.0`",
        meaning: "REST API version every call pins",
    },
    Variable {
        names: &["SALESFORCE_EXTERNAL_ID_FIELD"],
        used_by: "salesforce-outbound, salesforce-inbound",
        default: "`StripeSync_Id__c`",
        meaning: "the Contact field (External ID, unique) holding the local customer id",
    },
    Variable {
        names: &["SALESFORCE_API_TIMEOUT_MS"],
        used_by: "salesforce-outbound, salesforce-inbound",
        default: "`10000`",
        meaning: "timeout of one Salesforce call",
    },
    Variable {
        names: &["SALESFORCE_OUTBOUND_CONSUMER_GROUP"],
        used_by: "salesforce-outbound",
        default: "`stripe-sync.salesforce-outbound`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["SALESFORCE_INBOUND_CONSUMER_GROUP"],
        used_by: "salesforce-inbound",
        default: "`stripe-sync.salesforce-inbound`",
        meaning: "consumer group id",
    },
    Variable {
        names: &["SALESFORCE_EVENTS_TOPIC"],
        used_by: "serve, salesforce-inbound",
        default: "`salesforce.events.v1`",
        meaning: "where Contact versions go (dead letters: `<topic>.dlq`)",
    },
    Variable {
        names: &["SALESFORCE_POLL_INTERVAL_MS"],
        used_by: "salesforce-inbound",
        default: "`10000`",
        meaning: "between polls of `queryAll`; `0` turns the poller off",
    },
    Variable {
        names: &["SALESFORCE_POLL_SETTLE_MS"],
        used_by: "salesforce-inbound",
        default: "`2000`",
        meaning: "the poller reads only whole seconds of `SystemModstamp` that ended at least this long ago",
    },
    Variable {
        names: &["SALESFORCE_POLL_PAGE_SIZE"],
        used_by: "salesforce-inbound",
        default: "`200`",
        meaning: "Contacts per query (1–2000)",
    },
    Variable {
        names: &["SALESFORCE_WEBHOOK_SECRET"],
        used_by: "serve",
        default: "unset: no relay route",
        meaning: "secret(s), comma-separated, at least 16 characters each, a relay signs `POST /webhooks/salesforce` with",
    },
    Variable {
        names: &["SALESFORCE_WEBHOOK_TOLERANCE_SECS"],
        used_by: "serve",
        default: "`300`",
        meaning: "accepted clock difference of a relay's signature",
    },
    Variable {
        names: &["DATABASE_POOL_SIZE"],
        used_by: "all",
        default: "`8`",
        meaning: "Postgres connections per process (stripe-inbound holds one more, for keeping its tables' statistics)",
    },
    Variable {
        names: &["MIRROR_QUERY_TIMEOUT_MS"],
        used_by: "serve",
        default: "`5000`",
        meaning: "statement timeout of each read of `/api/stripe/*` (100 to 2147483647), set for its own read-only transaction only (lock waits included); past it Postgres cancels the read and the API answers `504 query_timeout`",
    },
    Variable {
        names: &["EXPORT_BATCH_LEASE_MS"],
        used_by: "serve",
        default: "`300000`",
        meaning: "how long a batch of `POST /api/exports/paid-sessions` is held after it is offered (1000 to 86400000): every call of its export name meanwhile, the one it went to included (callers are not told apart), gets `batch_in_flight`; unacknowledged after that, it is offered again to the next caller of the name",
    },
    Variable {
        names: &["METRICS_ADDR"],
        used_by: "serve, workers",
        default: "serve: unset (on `LISTEN_ADDR`); workers: `127.0.0.1:9101` / `:9102` / `:9103` / `:9104` (order-notifier) / `:9105` (stripe-commands) / `:9106` (salesforce-outbound) / `:9107` (salesforce-inbound)",
        meaning: "where a process serves `/metrics`, `/healthz`, `/readyz`. Set for serve, they move to that listener and the public port answers 404 for them, carrying only the webhook and the API",
    },
    Variable {
        names: &["SHUTDOWN_GRACE_SECS"],
        used_by: "serve, workers",
        default: "`30`",
        meaning: "after SIGTERM/Ctrl-C, exit anyway (status 1) if still draining after this long",
    },
    Variable {
        names: &["RUST_LOG"],
        used_by: "all",
        default: "`info`",
        meaning: "log filter",
    },
    Variable {
        names: &["MALLOC_ARENA_MAX"],
        used_by: "stripe-inbound (glibc's)",
        default: "`2` for stripe-inbound in `docker-compose.yml`, `scripts/dev` and the bench",
        meaning: "malloc arenas per process; glibc's own default (8 per core) let stripe-inbound reach 73 MiB on a backlog of large objects, 2 kept it at 57–58 MiB at the same rate; measured for stripe-inbound only, so set for it only",
    },
    Variable {
        names: &["LOG_FORMAT"],
        used_by: "all",
        default: "text",
        meaning: "`json` for one JSON object per line",
    },
];

/// The reference as a markdown table.
pub fn markdown() -> String {
    table_of(VARIABLES.iter())
}

/// The variables a process cannot start without (somewhere), as a
/// markdown table: the README's short list.
pub fn required_markdown() -> String {
    table_of(
        VARIABLES
            .iter()
            .filter(|v| v.default.starts_with("**required**")),
    )
}

fn table_of<'a>(rows: impl Iterator<Item = &'a Variable>) -> String {
    let mut table = String::from("| variable | used by | default | meaning |\n|---|---|---|---|\n");
    for v in rows {
        let names: Vec<String> = v.names.iter().map(|n| format!("`{n}`")).collect();
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            names.join(", "),
            v.used_by,
            v.default,
            v.meaning
        ));
    }
    table
}

/// Every variable name of the reference.
pub fn names() -> impl Iterator<Item = &'static str> {
    VARIABLES.iter().flat_map(|v| v.names.iter().copied())
}
