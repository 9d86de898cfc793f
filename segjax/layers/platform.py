"""segjax.ops.platform.select for implementations that call a flax module's submodules (a lifted transform, as
flax.linen.switch is of lax.switch)."""
from flax.core import lift
from flax.linen import transforms

from segjax.ops import platform


def select(module, *operands, cpu, xla):
  """platform.select(*operands, cpu=..., xla=...) where `cpu` and `xla` are (module, *operands) -> outputs using
  the same variables (create them before, e.g. by running one of them at init)."""
  return transforms.lift_direct_transform(_select, (cpu, xla), module, *operands)


def _select(cpu, xla, scope, *operands):
  def inner(scope_fn, repack_fn, variable_groups, rng_groups):
    def pure(fn):
      def run(*operands):
        inner_scope = scope_fn(variable_groups, rng_groups)
        return fn(inner_scope, *operands), repack_fn(inner_scope)
      return run
    return platform.select(*operands, cpu=pure(cpu), xla=pure(xla))

  return lift.pack(inner, (True,), (True,), (True,), name="platform_select")(scope)
