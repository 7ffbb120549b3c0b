#pragma once
// The `etl` job of `shoal worker` (issue 5 × issue 7): each claimed record of the ETL queue
// names a blob (payload = blob name; empty payload = the record id), which is loaded into SQL
// through an etl_job (workers/etl/orchestrator.hpp) with its durable step history: the lane's
// chain of four stage actors (extract → validate → transform → load, etl_chain.hpp) under a
// supervisor.
//
// Verdicts:
//   done     the blob loaded (or was already loaded: ledger or history), quarantined records
//            included; detail "9963 rows, 0 duplicates, 37 quarantined in 412.0 ms (flights)"
//   failed   the blob cannot be parsed at all (error with line, column and byte), the blob is
//            missing, a storage read failed, a dataset's insert does not fit its rows, SQLite
//            stayed busy, or a stage actor failed (an exception, or the SQL connection failed:
//            errc::io) and was restarted by the chain's supervisor (the load stage with a new
//            connection): the worker retries with backoff, then dead-letters the record
//   release  stop requested or lease lost between steps (or before the load's COMMIT): the
//            durable history lets the next claimer resume after the last recorded step
//   error    (result<> error) the chain's supervisor gave up (more than 5 stage restarts in
//            60 s, e.g. the database cannot be reopened): the job is broken, the worker exits
//            and its supervisor restarts it

#include "workers/config.hpp"
#include "workers/error.hpp"
#include "workers/fleet/job.hpp"

#include <memory>

namespace shoal::workers::etl {

/// Makes the ETL fleet job from `cfg`: storage from [storage], blobs from etl.container, the
/// history in etl.runs_table (created if missing), datasets from etl.datasets_dir, the sink from
/// etl.postgres_url when set, else etl.sqlite_path (WAL, busy timeout etl.busy_timeout_ms).
/// Errors: invalid_argument (bad connection string), parse/io (a dataset file), io (SQL
/// connection), storage (the runs table). One instance per worker lane (owner only: it holds a
/// SQL connection).
[[nodiscard]] result<std::unique_ptr<fleet::job>> make_etl_fleet_job(const config& cfg);

} // namespace shoal::workers::etl
