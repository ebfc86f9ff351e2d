"""The node's Prometheus metrics, gathered at scrape time from what shims leave on disk and from /proc.

Nothing here talks to a shim or a VM, and nothing runs on the pods' start path: shims append one line per finished
operation and per error to the spool (rund/runtime/telemetry.py); each scrape reads the new lines into histograms
and counters kept here, then reads the sandboxes' records, /proc, the cgroup pool's registry, the rootfs cache and
the template store. A dead shim is a sandbox shown as `shim-dead` or `dead`, never a failed scrape.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from rund.config import Config
from rund.ops import procstat, sandboxes
from rund.ops.spool import SpoolReader
from rund.runtime import spares

log = logging.getLogger("rund.ops.metrics")

# Start steps take from ~1 ms (a pooled cgroup) to tens of seconds (a cold boot under TCG).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_NAME = re.compile(r"[a-z][a-z0-9_.]{0,39}")
_CODE = re.compile(r"[A-Z][A-Z_]{0,39}")
SPARE_STATS_TIMEOUT = 0.5              # a keeper answers from memory; a stuck one costs a scrape no more than this
MAX_STEP_SERIES = 200                   # label sets from the spool: names come from rund's code; a cap all the same


class NodeMetrics:
    """One per state dir. exposition(accept) is what the HTTP endpoint serves."""

    def __init__(self, cfg: Config, claim_spool: bool = True, pss_max_age: float = 30.0):
        self.cfg = cfg
        self.state_dir = cfg.state_dir
        self.registry = CollectorRegistry(auto_describe=False)
        self.spool = SpoolReader(cfg.state_dir)
        if claim_spool:
            self.spool.claim()
        self._lock = threading.Lock()
        self._started = time.time()
        self._step_series: set[tuple[str, str, str]] = set()
        self._templates_seen: set[tuple[str, float]] = set()
        self._template_count = 0
        self._pool = None
        self._cache = None
        self._pss = procstat.PssCache(pss_max_age)
        r = self.registry
        self.operation_seconds = Histogram(
            "rund_operation_duration_seconds", "Task operations of rund shims, whole: create (vm: clone, cold, or "
            "pod when the container joins a running VM), start, delete, teardown (of the sandbox)",
            ["op", "vm"], buckets=BUCKETS, registry=r)
        self.step_seconds = Histogram(
            "rund_operation_step_duration_seconds", "Steps of those operations as the shim's trace names them "
            "(create: rootfs, cgroup, vm, vm.*, agent_setup, agent_create; start: agent_start; ...)",
            ["op", "step", "vm"], buckets=BUCKETS, registry=r)
        self.template_hits = Counter("rund_template_hits", "Sandbox VMs cloned from a template", registry=r)
        self.template_misses = Counter("rund_template_misses", "Sandbox VMs booted cold (no usable template)",
                                       registry=r)
        self.template_builds = Counter("rund_template_builds", "Templates published in the store since this "
                                       "daemon started", registry=r)
        self.errors = Counter("rund_task_errors", "Task API calls a shim answered with an error, by method and "
                              "gRPC code", ["method", "code"], registry=r)
        self.spool_records = Counter("rund_metrics_spool_records", "Records read from the shims' spool",
                                     ["kind"], registry=r)
        r.register(self)

    # ---- the scrape ----------------------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            self.consume()
            return encoder(self.registry), content_type

    def close(self) -> None:
        self.spool.close()

    def consume(self) -> None:
        """Before the registry is encoded: new spool records into the histograms and counters, new templates."""
        self._scan_templates()
        for doc in self.spool.take():
            try:
                self._apply(doc)
            except (KeyError, TypeError, ValueError, AttributeError):
                self.spool.rejected += 1

    def _apply(self, doc: dict) -> None:
        kind = doc.get("k")
        if kind == "trace":
            op = str(doc["op"])
            if not _NAME.fullmatch(op):
                raise ValueError(op)
            vm = ""
            if op == "create":
                vm = str(doc.get("labels", {}).get("vm", "pod"))
                if vm not in ("clone", "spare", "cold", "pod"):
                    vm = "other"
                if vm in ("clone", "spare"):     # a spare VM is a clone made ahead of time
                    self.template_hits.inc()
                elif vm == "cold":
                    self.template_misses.inc()
            self.operation_seconds.labels(op, vm).observe(float(doc["total"]))
            for name, seconds in doc.get("steps", ()):
                series = (op, str(name), vm)
                if not _NAME.fullmatch(series[1]):
                    continue
                if series not in self._step_series:
                    if len(self._step_series) >= MAX_STEP_SERIES:
                        continue
                    self._step_series.add(series)
                self.step_seconds.labels(*series).observe(float(seconds))
        elif kind == "error":
            method, code = str(doc["method"]), str(doc["code"])
            if not (re.fullmatch(r"[A-Za-z]{1,40}", method) and _CODE.fullmatch(code)):
                raise ValueError(method)
            self.errors.labels(method, code).inc()
        else:
            raise ValueError(kind)
        self.spool_records.labels(kind).inc()

    # ---- gauges, read fresh at every scrape (prometheus_client custom collector) --------------------------

    def describe(self):
        return []

    def collect(self):
        t0 = time.monotonic()
        views = sandboxes.scan(self.state_dir, self._pss)
        self._pss.prune()
        yield from self._sandbox_families(views)
        yield from self._pool_families()
        yield from self._cache_families()
        yield from self._template_families()
        yield from self._spare_families()
        rejected = CounterMetricFamily("rund_metrics_spool_rejected", "Spool lines that were not valid records")
        rejected.add_metric([], self.spool.rejected)
        yield rejected
        took = GaugeMetricFamily("rund_metrics_collect_seconds", "Time this scrape took to read the node's state")
        took.add_metric([], time.monotonic() - t0)
        yield took

    def _sandbox_families(self, views):
        by_state = GaugeMetricFamily("rund_sandboxes", "Sandboxes in the state dir by state (running, creating, "
                                     "vm-dead, shim-dead, dead, unreadable)", labels=["state"])
        for state in sandboxes.STATES:
            by_state.add_metric([state], sum(v.state == state for v in views))
        yield by_state
        key = ["namespace", "sandbox"]
        info = GaugeMetricFamily("rund_sandbox_info", "One per sandbox: its state and how its VM came (clone, "
                                 "cold)", labels=[*key, "state", "vm"])
        containers = GaugeMetricFamily("rund_sandbox_containers", "Containers of the sandbox", labels=key)
        created = GaugeMetricFamily("rund_sandbox_start_time_seconds", "When the sandbox was created (unix time)",
                                    labels=key)
        pss = GaugeMetricFamily("rund_sandbox_memory_pss_bytes", "Host memory of the sandbox's processes "
                                "(proportional set size, at most --pss-max-age old; process: vmm, shim)",
                                labels=[*key, "process"])
        cpu = CounterMetricFamily("rund_sandbox_cpu_seconds", "CPU time of the sandbox's processes (user + "
                                  "system; process: vmm, shim)", labels=[*key, "process"])
        guest = GaugeMetricFamily("rund_sandbox_guest_memory_bytes", "Memory in use by the sandbox's containers "
                                  "inside the guest, as of containerd's last Stats call", labels=key)
        for v in views:
            k = [v.namespace, v.id]
            info.add_metric([*k, v.state, v.vm], 1)
            containers.add_metric(k, len(v.containers))
            if v.created_unix is not None:
                created.add_metric(k, v.created_unix)
            for process, p, c in (("vmm", v.vmm_pss_bytes, v.vmm_cpu_seconds),
                                  ("shim", v.shim_pss_bytes, v.shim_cpu_seconds)):
                if p is not None:
                    pss.add_metric([*k, process], p)
                if c is not None:
                    cpu.add_metric([*k, process], c)
            if v.guest_memory_bytes is not None:
                guest.add_metric(k, v.guest_memory_bytes)
        yield from (info, containers, created, pss, cpu, guest)

    def _pool_families(self):
        free = GaugeMetricFamily("rund_cgroup_pool_slots", "Sandbox cgroups of the pool by state (free: "
                                 "pre-created and ready; leased: held by a sandbox)", labels=["state"])
        target = GaugeMetricFamily("rund_cgroup_pool_target", "Free cgroups the shims keep ready ([cgroups] "
                                   "pool_size; 0: no pool)")
        target.add_metric([], self.cfg.cgroups.pool_size if self.cfg.cgroups.pool else 0)
        try:
            pool = self._cgroup_pool()
            stats = pool.statistics() if pool is not None else None
        except Exception as e:  # noqa: BLE001 - the scrape reports what it can
            log.warning("cgroup pool statistics: %s", e)
            stats = None
        if stats is not None:
            free.add_metric(["free"], stats.free)
            free.add_metric(["leased"], stats.leased)
        yield free
        yield target

    def _cgroup_pool(self):
        """The pool's statistics() without preparing anything: None while no shim has made the pool."""
        if self._pool is None:
            from rund.resources.cgroups import CgroupPool, Registry, select_driver
            from rund.runtime.resource_config import pool_config
            pc = pool_config(self.cfg)
            try:
                driver = select_driver(pc.parent, pc.version, pc.mountinfo)
                registry = Registry.for_pool(pc.state_dir, driver.version, pc.parent)
            except Exception as e:  # noqa: BLE001
                log.warning("cgroup pool: %s", e)
                return None
            if not Path(registry.path).is_dir():
                return None
            self._pool = CgroupPool(driver, registry, pc.size, pc.kill_timeout_s)
        return self._pool

    def _cache_families(self):
        families = {
            "entries": GaugeMetricFamily("rund_rootfs_cache_images", "Cached erofs images of image layer chains"),
            "bytes": GaugeMetricFamily("rund_rootfs_cache_bytes", "Disk used by the rootfs cache (all images)"),
            "pinned": GaugeMetricFamily("rund_rootfs_cache_pins", "Pins on cached images (one per container "
                                        "and image)"),
            "private": GaugeMetricFamily("rund_rootfs_cache_private_images", "Per-container images (not "
                                         "shareable)"),
        }
        limit = GaugeMetricFamily("rund_rootfs_cache_max_bytes", "The cache's bound ([rootfs] cache_max_mib)")
        limit.add_metric([], self.cfg.rootfs.cache_max_mib << 20)
        try:
            if self._cache is None and Path(self.cfg.rootfs.cache_dir).is_dir():
                from rund.runtime.resource_config import rootfs_cache
                self._cache = rootfs_cache(self.cfg)
            stats = self._cache.statistics() if self._cache is not None else None
        except Exception as e:  # noqa: BLE001
            log.warning("rootfs cache statistics: %s", e)
            stats = None
        if stats is not None:
            for field, family in families.items():
                family.add_metric([], getattr(stats, field))
        yield from families.values()
        yield limit

    def _scan_templates(self) -> None:
        count = 0
        if self.cfg.templates.enabled:
            from rund.templates.errors import TemplateError
            from rund.templates.store import TemplateStore
            store = TemplateStore(Path(self.cfg.templates.dir))
            try:
                keys = store.keys()
            except OSError:
                keys = []
            for key in keys:
                try:
                    manifest = store.load(key).manifest
                except (TemplateError, OSError):
                    continue
                count += 1
                seen = (key, manifest.created_unix)
                if seen not in self._templates_seen:
                    self._templates_seen.add(seen)
                    if manifest.created_unix >= self._started:
                        self.template_builds.inc()
        self._template_count = count

    def _spare_families(self):
        """Each spare VM keeper of this state dir, asked for its pool ([templates] spare_vms): a keeper not running
        is no series (it exits when unused; the next CRI pod of its class starts it)."""
        vms = GaugeMetricFamily("rund_spare_vms", "Spare VMs of a template's keeper: ready to be taken, or being "
                                "made", labels=["template", "state"])
        target = GaugeMetricFamily("rund_spare_vms_target", "Spare VMs the keeper keeps ready", labels=["template"])
        taken = CounterMetricFamily("rund_spare_vms_taken", "Spare VMs handed to sandboxes since the keeper started",
                                    labels=["template"])
        failed = CounterMetricFamily("rund_spare_vms_failed", "Spare VM starts that failed since the keeper started",
                                     labels=["template"])
        for root in sorted(Path(self.state_dir, "spares").glob("*")):
            stats = spares.statistics(root, timeout=SPARE_STATS_TIMEOUT)
            if stats is None:
                continue
            vms.add_metric([root.name, "ready"], stats["ready"])
            vms.add_metric([root.name, "starting"], stats["starting"])
            target.add_metric([root.name], stats["count"])
            taken.add_metric([root.name], stats["taken"])
            failed.add_metric([root.name], stats["failed"])
        yield from (vms, target, taken, failed)

    def _template_families(self):
        present = GaugeMetricFamily("rund_templates", "Usable templates in the store ([templates] dir)")
        present.add_metric([], self._template_count)
        yield present
