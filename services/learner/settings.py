"""Learner settings (``TALLY_LEARNER_*``)."""

from datetime import time
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from tally.settings import CONFIG_DIR, ServiceSettings


class LearnerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_LEARNER_", extra="ignore")

    http_port: int = 8105
    #: The model registry: every model in it starts equally preferred by the policy.
    models_path: Path = CONFIG_DIR / "models.yaml"
    #: Calibration is recomputed at most once per this many seconds per workspace.
    calibration_debounce_s: float = 2.0
    #: Runs a velocity pool needs before its lognormal fit is published.
    velocity_min_samples: int = 5
    #: Runs of a task type with both an estimate and usage before its token factor counts.
    token_min_samples: int = 3
    #: Tasks in each window of the estimation-error trend.
    trend_window: int = 20
    #: Reward function by default, and per task type (``{"docs": "quality"}``).
    reward_default: str = "shaped"
    reward_by_task_type: dict[str, str] = {}
    #: Routing policy: runs of one task class per update, learning rate, clip, exploration
    #: floor, weight of cost against reward, discount of credit across escalated attempts.
    group_size: int = 4
    learning_rate: float = 0.5
    clip: float = 0.2
    floor: float = 0.1
    cost_weight: float = 0.3
    gamma: float = 0.9
    #: Pseudo-runs of a model's workspace-wide figures each task class's estimate starts
    #: from: a class with fewer runs than this leans mostly on the workspace's figures.
    #: None (the default): learned from how much the classes' success rates differ.
    pool_strength: float | None = None
    #: Share of task ids held out of training to evaluate the policy.
    held_out_share: float = 0.2
    #: A checkpoint is saved every this many policy updates; this many are kept (best score).
    checkpoint_every: int = 10
    checkpoints_kept: int = 5
    #: A/B verdicts wait for this many runs per arm.
    ab_min_samples: int = 30
    #: When the daily learning pass runs (UTC); disabled when ``daily_enabled`` is false.
    daily_at: time = time(3, 0)
    daily_enabled: bool = True
    #: Learning jobs: workers in this process (jobs run at once), how long a job's queue
    #: message outlives a silent worker before another resumes the job, and what a CPU
    #: hour of a job costs against its budget.
    job_workers: int = 4
    job_ack_wait_s: float = 30.0
    job_usd_per_cpu_hour: float = 0.10
    jobs_enabled: bool = True
    #: How often ``tally_learning_jobs{status}`` is counted again (seconds).
    job_metrics_every_s: float = 5.0
    #: One replica learns at a time (a lease in the JetStream KV bucket ``*_LEASES``): a
    #: standby takes over this long after the holder stops renewing.
    lease_ttl_s: float = 9.0
