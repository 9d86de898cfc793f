"""Device mesh and shardings: the batch is split over the `data` axis; parameters replicated or FSDP-sharded."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch, mesh: Mesh):
  """Host-local numpy batch -> global jax.Arrays sharded on the leading axis across all processes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


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
