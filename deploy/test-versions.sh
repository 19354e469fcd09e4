#!/usr/bin/env bash
# The end-to-end core against every other supported PostgreSQL major
# (issue 22): deploy, batch, rollback with the exact ACL restore,
# disable/enable, unchanged and drop-and-create redeploys, a kill -9 of the
# agent mid-apply, the syntax gate, a watch's statistics, and what differs
# per version (tests/tests/pg_versions.rs). The full suite runs on the
# distribution's PostgreSQL (deploy/test.sh); this runs the core once per
# major, each against the server binaries deploy/install-postgres-versions.sh
# installs.
#
#   deploy/test-versions.sh [MAJOR...]     (default: 13 14 16 17 18)
#
# Prints the wall time of each major's run. Fails when a core test fails or
# is missing (renamed tests must be renamed here too).
set -euo pipefail
cd "$(dirname "$0")/.."

majors=("$@")
((${#majors[@]})) || majors=(13 14 16 17 18)
dir=${PGROLLOUT_PG_VERSIONS_DIR:-/opt/pgrollout-pg}

# file:test, each run with --exact.
core=(
  pg_versions:every_job_connects_and_names_the_servers_major
  pg_versions:a_sql_standard_body_deploys_and_rolls_back_exactly_from_14_and_is_refused_on_13
  pg_versions:a_read_only_database_is_refused_at_connect_saying_why
  deploy:a_new_then_changed_function_deploys_with_backup_ledger_and_grants
  batch:a_shuffled_list_deploys_in_dependency_order_with_progress_and_an_exact_summary
  batch:an_atomic_batch_with_one_broken_routine_leaves_the_database_exactly_as_before
  rollback:a_rollback_restores_definition_owner_acl_and_comment_byte_for_byte
  rollback:disable_then_enable_returns_the_routine_exactly_in_both_modes
  rollback:the_automatic_rollback_after_a_failing_post_commit_smoke_test_is_exact_and_exits_3
  routine_lifecycle:unchanged_routines_are_left_untouched_and_recorded_as_unchanged
  routine_lifecycle:a_change_create_or_replace_cannot_make_is_a_drop_and_create_that_keeps_owner_acl_comment
  faults:an_agent_killed_mid_apply_changes_nothing_and_its_restart_settles_the_rollout
  probes:the_syntax_gate_dry_runs_on_the_database_and_refuses_with_file_and_line
  watch:a_deploy_that_slows_a_routine_raises_an_alert_and_one_that_does_not_stays_quiet
  agent_protocol:smoke_calls_that_end_the_transaction_commit_nothing_even_past_the_controller
  smoke_server_log:a_call_that_changes_its_settings_does_not_change_the_next_calls
)
files=()
names=()
for entry in "${core[@]}"; do
  file=${entry%%:*}
  [[ " ${files[*]} " == *" $file "* ]] || files+=("$file")
  names+=("${entry#*:}")
done
test_args=()
for file in "${files[@]}"; do
  test_args+=(--test "$file")
done

deploy/install-postgres-versions.sh "$dir" "${majors[@]}"
# The end-to-end tests run the built binaries, so build them first.
cargo build --workspace --bins
cargo test -p pgrollout-tests "${test_args[@]}" --no-run

summary=()
for major in "${majors[@]}"; do
  echo "pgrollout: the end-to-end core on PostgreSQL $major"
  log=$(mktemp)
  started=$SECONDS
  status=0
  PGROLLOUT_TEST_PG_BIN=$dir/$major/bin \
    cargo test --no-fail-fast -p pgrollout-tests "${test_args[@]}" -- --exact "${names[@]}" 2>&1 | tee "$log" ||
    status=$?
  elapsed=$((SECONDS - started))
  passed=$(grep -cE '^test .* \.\.\. ok$' "$log" || true)
  rm -f "$log"
  if ((status != 0)); then
    echo "pgrollout: the core failed on PostgreSQL $major" >&2
    exit "$status"
  fi
  if ((passed != ${#names[@]})); then
    echo "pgrollout: PostgreSQL $major ran $passed of the ${#names[@]} core tests: is one renamed?" >&2
    exit 1
  fi
  summary+=("PostgreSQL $major: ${#names[@]} core tests passed in ${elapsed}s")
done
printf 'pgrollout: %s\n' "${summary[@]}"
