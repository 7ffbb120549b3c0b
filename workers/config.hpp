#pragma once
// shoal's configuration: one TOML file (toml++), every key with its unit in its name,
// overridable by SHOAL_<SECTION>_<KEY> environment variables and then by command-line flags.
// The storage connection string comes from AZURE_STORAGE_CONNECTION_STRING like the Azure SDKs.
// deploy/shoal.toml.example lists every key with its default.

#include "workers/error.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::workers {

/// [storage]
struct storage_config {
  /// The account. Empty = read `connection_string_file`, else $AZURE_STORAGE_CONNECTION_STRING;
  /// with none of them the daemons refuse to start (cmd::load), `shoal run` and the tools use
  /// development storage ("UseDevelopmentStorage=true", Azurite).
  std::string connection_string;
  /// File holding the connection string (its first line that is neither blank nor a '#'
  /// comment), read by load_config with transport::read_secret_file's rules (symlinks followed,
  /// owner and mode checked: 0600, or root-owned 0440). Empty = none. Not with connection_string.
  std::string connection_string_file;
  /// Not a key: where connection_string came from ("AZURE_STORAGE_CONNECTION_STRING",
  /// "connection_string_file /etc/shoal/storage", …), for messages; empty when none was found.
  std::string connection_string_origin;
  std::uint32_t request_timeout_ms = 30'000; ///< one HTTP request, body included
  std::uint32_t connect_timeout_ms = 2'000;  ///< TCP (+ TLS) connect
  std::uint32_t max_attempts = 4;     ///< HTTP attempts per request, counting the first
  std::string ca_file;                ///< PEM bundle for TLS; empty = system default
};

/// [work]: the work table and claiming (workers/claim/SCHEMA.md).
struct work_config {
  std::string table = "shoalwork";     ///< the work table (workers/claim/SCHEMA.md)
  std::uint32_t shards = 16;           ///< partitions per queue: {queue}-{shard:02x}
  std::uint32_t lease_ms = 30'000;      ///< a claim's lease, on the storage server's clock
  std::uint32_t lease_renew_ms = 10'000; ///< renew held leases this often (< lease_ms)
  std::uint32_t claim_batch = 100;     ///< merges per entity group transaction, ≤ 100
  std::uint32_t max_attempts = 5;      ///< then the record is dead
  std::uint32_t retry_base_ms = 200;   ///< not_before backoff after a failure, doubling
  std::uint32_t retry_max_ms = 30'000;  ///< cap of that backoff (±20 % jitter)
  /// Done records stay in the table (readable, and their ids refused by enqueue) this long after
  /// their completion; then a worker's sweep removes them, keeping their count (SCHEMA.md "Sweep").
  std::uint32_t done_retention_ms = 86'400'000;
  std::string history_table;           ///< swept done records are copied here first; empty = just deleted
};

/// [catalog]: the blob catalog (storage/CATALOG.md), used by `shoal catalog` and the persistor.
struct catalog_config {
  std::string table = "shoalcatalog";          ///< catalog name = index table; the WAL is table + "wal"
  std::uint32_t wal_retention_ms = 86'400'000; ///< `shoal catalog compact` keeps WAL entries younger than this
  std::uint32_t stall_timeout_ms = 60'000;     ///< an unapplied WAL entry this old is applied by the next writer
};

/// [etl]: blobs into SQL (workers/etl/, issue 7).
struct etl_config {
  std::string queue = "etl";            ///< work-table queue of ETL records (payload = blob name)
  std::string container = "shoal";      ///< container of the persistor's blobs
  std::string runs_table = "shoalruns"; ///< orchestration instances and step history
  std::string datasets_dir;             ///< *.toml dataset files; empty = generic mode only
  std::string sqlite_path = "./shoal.db"; ///< SQLite sink (the default)
  std::string postgres_url;             ///< "postgresql://…": load into PostgreSQL instead
  std::uint32_t busy_timeout_ms = 30'000; ///< SQLite: wait this long for another writer
  std::uint32_t claim_max = 16;         ///< ETL records claimed per round by `shoal etl run`
  /// Run log in the runs table: "per_blob" = one entity group transaction per loaded blob (the
  /// instance row and its step rows; step by step only for a failed step or a resumed blob);
  /// "per_step" = every step written as it finishes.
  std::string history = "per_blob";
  std::uint64_t max_blob_bytes = 256ull << 20; ///< a larger blob is refused before its body is read
};

/// [persistor]: messages into date-partitioned blobs (workers/persistor/, issue 6).
struct persistor_config {
  std::string mode = "push";             ///< push (ZeroMQ ROUTER) | pull (Azure Storage Queue)
  std::string endpoint = "tcp://127.0.0.1:5590"; ///< push: where producers connect (DEALER)
  std::string committed_endpoint;        ///< optional PUB endpoint for persist.committed
  std::string queue = "shoalin";         ///< pull: the Azure Storage Queue read
  std::string queue_dest = "default";    ///< pull: dest of messages that name none
  std::uint32_t pullers = 4;             ///< pull: parallel pullers
  std::uint32_t max_dequeue = 5;         ///< pull: more dequeues than this → poison queue
  std::string poison_queue = "shoalpoison"; ///< pull: where poison messages are parked
  std::uint32_t visibility_timeout_ms = 60'000; ///< pull: > a batch's life
  std::uint32_t pull_idle_max_ms = 5000; ///< pull: longest wait between gets of an empty queue (back-off cap)
  std::string container = "shoal";       ///< blob container
  std::string format = "persistor-v1";   ///< persistor-v1 | ndjson
  std::string blob_type = "block";       ///< block | append
  std::uint32_t batch_max_records = 10000;
  std::uint32_t batch_max_bytes = 4u << 20;
  std::uint32_t batch_max_delay_ms = 1000;
  std::uint32_t batch_left_behind_records = 100; ///< seal a dest's other date folders after this many records in a row to one (0 = off)
  std::string event_time_field;          ///< JSON field of the payload holding the event time; empty = ingest time
  std::string partition = "day";         ///< date folders of blob names: day | hour | month
  std::string host;                      ///< host part of blob names; empty = gethostname()
  std::string name = "p1";               ///< persistor name (blob names, seq counter)
  std::uint32_t writers = 8;             ///< parallel blob writers
  std::uint32_t max_inflight_bytes = 64u << 20; ///< high-water mark: stop reading above this
  std::uint32_t append_max_blocks = 49'000;     ///< append mode: roll before this many blocks
  std::uint32_t append_max_bytes = 256u << 20;  ///< append mode: roll before this size
  std::uint32_t register_etl = 1;        ///< 1 = enqueue each blob into the work table's ETL queue
  std::uint32_t register_catalog = 1;    ///< 1 = register each blob in the catalog
  std::uint32_t catalog_before_ack = 1;  ///< 1 = ack a blob's records only after its catalog entry; 0 = entry after the ack
  std::string curve_secret_key;          ///< push on a non-loopback tcp endpoint: this persistor's CURVE secret key file
  std::string curve_public_key;          ///< its public key file (the one producers are given); checked against the secret
  std::string curve_allow_dir;           ///< folder of the producers' *.pub files admitted (ZAP allow-list)
};

/// [worker]: one `shoal worker` process (workers/fleet/, issue 5).
struct worker_config {
  std::string job = "exec";              ///< exec | etl | noop | sleep:MS: what runs on each claimed record
  std::string queue;                     ///< work-table queue to claim from; empty = "exec" for exec, etl.queue for etl
  std::string exec_command;              ///< exec job: run by /bin/sh -c, the payload on stdin; exit 0 = done
  std::uint32_t exec_timeout_ms = 60'000; ///< exec job: SIGTERM, then SIGKILL 2 s later; counts as a failure
  /// exec job: the only variables of the worker's environment the command sees (names separated
  /// by commas or spaces), besides SHOAL_RECORD_ID, SHOAL_QUEUE, SHOAL_ATTEMPT and SHOAL_GEN.
  /// Storage secrets such as AZURE_STORAGE_CONNECTION_STRING reach it only when listed here.
  std::string exec_env = "PATH,HOME,LANG,LC_ALL,TZ,TMPDIR,USER,LOGNAME";
  std::uint32_t concurrency = 1;         ///< records run at once by one worker process
  std::uint32_t poll_min_ms = 250;       ///< fallback table poll when idle, first delay
  std::uint32_t poll_max_ms = 5'000;     ///< fallback table poll backoff cap (work.available wakes earlier)
  std::uint32_t drain_timeout_ms = 20'000; ///< on SIGTERM or ctl.drain: finish or release in-flight, then exit 0
};

/// [fleet]: `shoal supervisor`, the coordinator and `shoal status` (workers/fleet/, issue 5).
struct fleet_config {
  std::uint32_t workers = 0;             ///< worker processes per supervisor; 0 = 2 per core
  std::string host;                      ///< this host's name in the fleet; empty = gethostname()
  std::string endpoint;                  ///< ROUTER for local workers; empty = ipc://{runtime dir}/shoal-{host}.sock
  std::string host_endpoint;             ///< tcp ROUTER for other hosts' supervisors (CURVE); empty = single host
  std::string table = "shoalfleet";      ///< fleet table: the coordinator lease row and host rows
  std::uint32_t heartbeat_interval_ms = 1'000; ///< ctl.heartbeat period, both directions
  std::uint32_t heartbeat_liveness = 3;  ///< missed heartbeats before a peer is dead
  std::uint32_t restart_intensity = 5;   ///< restarts allowed per slot within restart_period_ms …
  std::uint32_t restart_period_ms = 60'000; ///< … else the slot backs off
  std::uint32_t restart_backoff_ms = 30'000; ///< pause of a slot that exceeded its restart intensity
  std::uint32_t coordinator_lease_ms = 15'000; ///< the coordinator row's lease
  std::uint32_t coordinator_renew_ms = 5'000;  ///< renewed this often (< coordinator_lease_ms)
  std::uint32_t drain_timeout_ms = 30'000;     ///< SIGTERM: wait this long for workers to drain, then SIGKILL
  std::uint32_t metrics_port = 0;        ///< Prometheus /metrics on 127.0.0.1…; 0 = off
  std::string metrics_address = "127.0.0.1"; ///< bind address of the metrics endpoint
  std::string curve_secret_key;          ///< this host's CURVE secret key file (`shoal keys generate`)
  std::string curve_public_key;          ///< this host's CURVE public key file
  std::string curve_allow_dir;           ///< folder of *.pub files: the hosts admitted (ZAP allow-list)
};

/// [web]: the dashboard `shoal supervisor` serves (workers/web/, issue 17).
struct web_config {
  std::uint32_t port = 0;                ///< TCP port of the dashboard; 0 = off
  std::string address = "127.0.0.1";     ///< bind address (keep loopback; see README "Dashboard")
  std::string token_file;                ///< file holding the token of requeue/purge; empty = read-only
  std::uint32_t refresh_ms = 2'000;      ///< pages poll their JSON this often
  std::uint32_t sample_ms = 30'000;      ///< queue counts sampled this often for the last-hour chart
};

/// [log]
struct log_config {
  std::string level = "info";          ///< trace|debug|info|warn|error|off
  std::string file;                    ///< rotating log file; empty = stderr only
};

/// The whole configuration. Plain values; copy freely.
struct config {
  storage_config storage;
  work_config work;
  catalog_config catalog;
  etl_config etl;
  persistor_config persistor;
  worker_config worker;
  fleet_config fleet;
  web_config web;
  log_config log;
};

/// Loads `path` (if non-empty; a missing file is an error), then applies SHOAL_* environment
/// overrides (e.g. SHOAL_WORK_LEASE_MS=5000), then, when no connection string is set, reads
/// `storage.connection_string_file` or AZURE_STORAGE_CONNECTION_STRING (no default: an empty
/// connection string means none was given; see storage_config), and validates.
/// Errors: io (unreadable file), parse (bad TOML, with line and column; unknown key; wrong
/// type), invalid_argument (a value out of range, naming the key; both connection_string and
/// connection_string_file set; a connection string file that is empty or that others may
/// read), io (connection string file unreadable). Thread-safe (reads the environment and files).
[[nodiscard]] result<config> load_config(const std::filesystem::path& path);

/// Every key load_config accepts ("section.key"), sorted, with its value in `c` as text
/// (numbers in decimal, strings as they are). Lets tests check deploy/shoal.toml.example and
/// tools print the configuration in force. Thread-safe (pure).
std::vector<std::pair<std::string, std::string>> config_entries(const config& c);

/// Whether a PostgreSQL URL carries a password (`postgresql://user:secret@host/db` or a
/// `password=` parameter). Such a URL must not be passed on a command line (every local user
/// can read argv); libpq reads passwords from ~/.pgpass, $PGPASSFILE or `passfile=`.
/// Thread-safe (pure).
bool postgres_url_has_password(std::string_view url) noexcept;

/// Checks ranges and relations (lease_renew_ms < lease_ms, 1 ≤ claim_batch ≤ 100, shards in
/// 1..256, ...). Errors: invalid_argument naming the key.
[[nodiscard]] result<void> validate(const config& c);

/// True for a [worker] job name: exec, etl, noop, or sleep:MS with MS in 0..600000.
/// Thread-safe (pure).
bool valid_job_name(std::string_view job);

/// The names of a [worker] exec_env list (commas and/or spaces between names, duplicates
/// dropped), or nullopt when one is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*).
/// Thread-safe (pure).
std::optional<std::vector<std::string>> exec_env_names(std::string_view list);

} // namespace shoal::workers
