#include "cluster/rank_model.h"

namespace kiln {

StatusOr<RankModel> load_rank_model(const std::string& path, int tensor, int pipeline,
                                    const std::vector<int64_t>& layer_split,
                                    const std::function<Status(const World&)>& on_joined) {
  RankModel r;
  KILN_ASSIGN_OR_RETURN(r.world, init_world(nullptr, nullptr, tensor, pipeline));
  const World& w = r.world->world();
  Status status = on_joined ? on_joined(w) : Status();
  if (w.size == 1) {  // a single rank holds the whole model
    KILN_RETURN_IF_ERROR(status);
    auto model = KimiLinearModel::load(path);
    if (!model.ok()) return model.status();
    r.model = std::move(model).value();
    return r;
  }
  // Every rank opens the checkpoint and plans; any failure is reported by agree_or_abort.
  auto ck = Checkpoint::open(path);
  if (status.ok() && !ck.ok()) status = ck.status();
  if (status.ok()) {
    auto plan = plan_rank((*ck)->config(), {w.tp_size, w.pp_size, layer_split}, w.rank,
                            DType::kF32, {});
    if (!plan.ok()) {
      status = plan.status();
    } else {
      ParallelContext ctx{*plan, w.tp_size > 1 ? &r.world->tp() : nullptr,
                          w.pp_size > 1 ? &r.world->pp() : nullptr};
      auto model = KimiLinearModel::load(path, ctx);
      if (model.ok()) {
        r.model = std::move(model).value();
      } else {
        status = model.status();
      }
    }
  }
  agree_or_abort(*r.world, status);
  return r;
}

}  // namespace kiln
