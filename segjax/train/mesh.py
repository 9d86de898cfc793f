"""Device mesh and shardings: the batch is split over the `data` axis; parameters replicated or FSDP-sharded."""
import collections
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segjax.data import compact

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def _local_mesh(mesh: Mesh) -> Mesh:
  """This process's devices of `mesh`, in the order of the batch rows they hold."""
  rows = batch_sharding(mesh).addressable_devices_indices_map((mesh.size,))
  return Mesh(np.asarray(sorted(rows, key=lambda d: rows[d][0].start or 0)), (DATA_AXIS,))


@functools.lru_cache(maxsize=8)
def _expand_on_devices(local_mesh: Mesh):
  sharding = batch_sharding(local_mesh)
  return jax.jit(functools.partial(compact.expand, xp=jax.numpy), out_shardings=sharding)


def global_batch(local_batch, mesh: Mesh):
  """Host-local compact numpy batch (segjax/data/compact.py) -> the model batch as global jax.Arrays sharded
  on the leading axis across all processes.

  The compact arrays cross to this process's devices and `compact.expand` runs there (one small program per
  mask bucket, on local devices only, so processes never have to agree on a bucket); the expanded shards then
  form the global arrays without moving. Batches without compact keys are placed as they are.
  """
  sharding = batch_sharding(mesh)
  if not set(compact.COMPACT_KEYS.values()) & set(local_batch):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
  local_mesh = _local_mesh(mesh)
  placed = jax.device_put(local_batch, batch_sharding(local_mesh))
  expanded = _expand_on_devices(local_mesh)(placed)
  processes = mesh.size // local_mesh.size
  return {k: jax.make_array_from_single_device_arrays((v.shape[0] * processes, *v.shape[1:]), sharding,
                                                      [s.data for s in v.addressable_shards])
          for k, v in expanded.items()}


def prefetch_to_device(local_batches, mesh: Mesh, size: int = 2):
  """Yields global_batch(b) of each of `local_batches`, `size` ahead: the transfers overlap the steps."""
  queue = collections.deque()
  for local_batch in local_batches:
    queue.append(global_batch(local_batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def check_batch_size(global_batch_size: int, mesh: Mesh):
  if global_batch_size % mesh.size:
    raise ValueError(f"config.batch_size={global_batch_size} is not divisible by the {mesh.size} devices")
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")


def fsdp_spec(shape, axis_size: int, min_size: int = 2**10) -> P:
  """Shards the largest dimension that the `data` axis divides (ZeRO-3 / FSDP); small arrays stay replicated."""
  if np.prod(shape, dtype=np.int64) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      return P(*([None] * dim + [DATA_AXIS]))
  return P()


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
  """NamedShardings for the train state: replicated, or with parameters and optimizer state FSDP-sharded.

  Batch-norm statistics stay replicated: they are small and every device normalises with them.
  """
  if not fsdp:
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
  shard = lambda x: NamedSharding(mesh, fsdp_spec(x.shape, mesh.shape[DATA_AXIS]))
  return abstract_state.replace(
      step=replicated(mesh), params=jax.tree.map(shard, abstract_state.params),
      batch_stats=jax.tree.map(lambda _: replicated(mesh), abstract_state.batch_stats),
      opt_state=jax.tree.map(shard, abstract_state.opt_state))
