"""Kept for importers: the race groups' records moved to :mod:`rv_tui.groupstore`, one floor
down, so the race engine and the log follower use them without importing ``jobs/``."""

from rv_tui.groupstore import (  # noqa: F401
    MAX_AGE_S, new_group_id, GitInfo, git_info, GroupJob, GroupRecord, utc_now_iso, GroupStore,
    group_json_path, group_jobs_path, publish_jobs, publish_record, _write, ensure_group_dir,
    fetch_remote_records, merge_records, LOST_SUBMISSION, recover_submission, _JOB_ID,
    group_segments_path, parse_segments, group_of, read_segments, next_segment,
)
