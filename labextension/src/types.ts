/**
 * The wire format of the jupyter-elastic REST API, mirroring `jupyter_elastic/models.py`
 * and `ClusterRecord.to_json` in `manager.py` (snake_case, seconds as numbers), and the
 * type of the function that calls it.
 */

/** Backends a cluster can run on. */
export type Backend = 'local' | 'kubernetes' | 'gateway';

/** Metered totals of a cluster (`Usage` in models.py). */
export interface IUsage {
  gpu_seconds: number;
  cpu_seconds: number;
  idle_seconds: number;
  busy_seconds?: number;
  cost: number;
}

/** One live worker (`WorkerDetail` in models.py). */
export interface IWorkerDetail {
  name: string;
  gpus: number;
  memory: number;
  gpu_utilization: number | null;
  gpu_memory: number | null;
  address?: string;
  status?: string;
}

/** Adaptive bounds, when a cluster scales adaptively. */
export interface IAdaptBounds {
  minimum: number;
  maximum: number;
}

/**
 * A cluster as `GET /clusters` lists it; `GET /clusters/{id}` and
 * `GET /clusters?details=1` (each cluster of the list) add `worker_details`.
 */
export interface ICluster {
  id: string;
  name: string;
  backend: Backend | string;
  status: 'starting' | 'running' | 'stopping' | 'stopped' | 'error' | string;
  phase?: string;
  phase_detail?: string;
  workers: number;
  gpus: number;
  has_gpu?: boolean;
  idle_seconds: number;
  idle_timeout: number;
  shutdown_after?: number;
  running_cells?: number;
  cells?: number;
  adapt?: IAdaptBounds | null;
  requested_workers?: number | null;
  dashboard_link: string | null;
  scheduler_address?: string | null;
  owner: string;
  created: string;
  usage: IUsage;
  currency?: string;
  worker_details?: IWorkerDetail[];
}

/** Reply of `GET /clusters` (and of `GET /clusters?details=1`). */
export interface IClusterList {
  clusters: ICluster[];
}

/** One `%%gpu` cell run (`HistoryRow` in models.py). */
export interface IHistoryRow {
  id: string;
  cell: number | null;
  started: string;
  backend: string;
  cluster_id: string | null;
  worker: string | null;
  device: 'gpu' | 'cpu' | 'local' | string;
  seconds: number;
  compute_seconds: number;
  gpus: number;
  gpu_seconds: number;
  cpu_seconds: number;
  cost: number;
  status: 'ok' | 'error' | 'cancelled' | 'timeout' | string;
  error?: string | null;
  source?: string;
  owner?: string;
  /** The notebook's path (the kernel's `JPY_SESSION_NAME`), or null outside a server. */
  notebook?: string | null;
}

/** Reply of `GET /usage`. */
export interface IUsageReport {
  clusters: IUsage;
  cells: {
    count: number;
    seconds: number;
    gpu_seconds: number;
    cpu_seconds: number;
    cost: number;
  };
  currency: string;
  pricing: { gpu_hour: number; cpu_hour: number };
}

/** A shared hub's quota for this user (`GET /quota`, from the gateway's quota module). */
export interface IQuota {
  user: string;
  groups: string[];
  limits: {
    gpus: number | null;
    workers: number | null;
    gpu_types: string[] | null;
    source: string;
  };
  holding: { gpus: number; workers: number };
  clusters: { name: string; workers: number; gpus: number }[];
  contact?: string;
}

/** Reply of `GET /quota`: `available` is false where the backend enforces no quota. */
export interface IQuotaReport {
  backend: string;
  available: boolean;
  quota: IQuota | null;
}

/** One interval of `GET /timeline` (`Sample` in controlplane/timeline.py). */
export interface ITimelineSample {
  /** Start of the interval (ISO-8601 UTC). */
  time: string;
  /** Most workers (and GPUs) seen in the interval, over every running cluster. */
  workers: number;
  gpus: number;
  /** Money every cluster has cost since the server started, at the interval's end. */
  cost: number;
  /** Whether a cell ran in the interval. */
  busy: boolean;
}

/** Reply of `GET /timeline`: the last `window` seconds, one sample per `interval`. */
export interface ITimeline {
  now: string;
  interval: number;
  window: number;
  samples: ITimelineSample[];
}

/** Body of `POST /clusters`. */
export interface ICreateCluster {
  backend?: string;
  workers?: number;
  gpus?: number;
  name?: string;
}

/**
 * Send one request to the REST API and decode its JSON reply.
 *
 * `path` is relative to `API_PATH`; the reply of a 204 is `undefined`. Failures reject with
 * an `Error` whose message is the server's `message`.
 */
export type RequestFn = <T>(path: string, init?: RequestInit) => Promise<T>;
