// The model's vocab_size bounds what is embedded and sampled: make-model's tokenizers have one id
// per model row; a tokenizer with more ids loads (counted) and every request naming such an id is
// refused with a 400; a text-format token above the vocabulary is a load error. A request whose
// logits are not finite ends with an error while the others go on. Both checkpoint layouts,
// through the engine, the routes and the CLI (generate, eval, inspect).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "cluster/engine/generation.h"
#include "tools/make_model/make_model.h"
#include "tests/common/micro_model.h"
#include "tests/common/run_command.h"
#include "cluster/engine/engine.h"
#include "cluster/api/routes.h"
#include "text/vocab_fit.h"
#include "shard/gguf.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr int64_t kVocab = 640;       // the micro preset's rows
constexpr int32_t kNanToken = 639;    // [PAD]: its embedding row is NaN in nan.gguf
const std::string kEvil = "<|evil|>";  // a special token at id 640, above the model's rows

int64_t as_int(const GgufValue& v) {
  return std::holds_alternative<int64_t>(v.v) ? std::get<int64_t>(v.v)
                                              : static_cast<int64_t>(std::get<uint64_t>(v.v));
}

// Rewrites a GGUF: `extra` appended to tokenizer.ggml.tokens as control tokens; `patch` may
// change any tensor's bytes. Handles the value types make-model writes.
void copy_gguf(const std::string& from, const std::string& to, const std::vector<std::string>& extra,
               const std::function<void(const std::string&, std::string&)>& patch) {
  auto g = GgufFile::open(from);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  GgufWriter w;
  for (const auto& [key, v] : g->metadata()) {
    using T = GgufValueType;
    switch (v.type) {
      case T::kUint32: w.add_uint32(key, static_cast<uint32_t>(as_int(v))); break;
      case T::kInt32: w.add_int32(key, static_cast<int32_t>(as_int(v))); break;
      case T::kFloat32: w.add_float32(key, static_cast<float>(std::get<double>(v.v))); break;
      case T::kBool: w.add_bool(key, std::get<bool>(v.v)); break;
      case T::kString: w.add_string(key, std::get<std::string>(v.v)); break;
      case T::kArray: {
        const GgufArray& a = *std::get<std::shared_ptr<GgufArray>>(v.v);
        if (v.array_type == T::kString) {
          std::vector<std::string> s;
          for (const GgufValue& e : a) s.push_back(std::get<std::string>(e.v));
          if (key == "tokenizer.ggml.tokens") s.insert(s.end(), extra.begin(), extra.end());
          w.add_string_array(key, s);
        } else if (v.array_type == T::kInt32 || v.array_type == T::kUint32) {
          std::vector<int32_t> s;
          for (const GgufValue& e : a) s.push_back(static_cast<int32_t>(as_int(e)));
          if (key == "tokenizer.ggml.token_type") s.insert(s.end(), extra.size(), 3);
          w.add_int32_array(key, s);
        } else {
          FAIL() << key << ": array type not handled";
        }
        break;
      }
      default: FAIL() << key << ": value type not handled";
    }
  }
  for (const GgufTensor& t : g->tensors()) {
    std::string bytes(reinterpret_cast<const char*>(t.data), t.nbytes);
    patch(t.name, bytes);
    w.add_tensor(t.name, t.type, t.ne, std::move(bytes));
  }
  ASSERT_TRUE(w.write(to).ok());
}

// A copy of the HF directory whose tokenizer_config.json `edit` changes.
void copy_hf(const fs::path& from, const fs::path& to, const std::function<void(json::object&)>& edit) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), to / e.path().filename());
  std::ifstream in(to / "tokenizer_config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  json::object config = json::parse(ss.str()).as_object();
  edit(config);
  std::ofstream(to / "tokenizer_config.json") << json::serialize(config);
}

void add_evil(json::object& config) {
  config["added_tokens_decoder"].as_object()["640"] = json::object{{"content", kEvil}, {"special", true}};
}

struct Loaded {
  std::unique_ptr<KimiLinearModel> model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  VocabFit fit;
};

Loaded load(const std::string& path) {
  Loaded l;
  auto m = KimiLinearModel::load(path);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  if (!m.ok()) return l;
  l.model = std::move(m).value();
  auto t = load_tokenizer(l.model->checkpoint(), &l.fit);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  if (t.ok()) l.tokenizer = std::make_unique<text::Tokenizer>(*t);
  return l;
}

Engine::Options engine_options() {
  Engine::Options o;
  o.scheduler.max_batch_tokens = 64;
  o.scheduler.prefill_chunk = 32;
  o.scheduler.max_sequences = 4;
  o.scheduler.page_tokens = 4;
  o.scheduler.max_context = 128;
  o.scheduler.n_pages = 4 * 128 / 4;
  return o;
}

// An engine running on its own thread, and the routes over it.
class Server {
 public:
  explicit Server(Loaded& l) : pool_(1) {
    const Engine::Options o = engine_options();
    state_ = l.model->new_paged_state(o.scheduler.max_sequences, o.scheduler.n_pages,
                                      o.scheduler.page_tokens).value();
    engine_ = std::make_unique<Engine>(*l.model, pool_, *state_, nullptr, *l.tokenizer, o, nullptr);
    st_.limits.context = o.scheduler.max_context;
    st_.limits.vocab_size = static_cast<int32_t>(l.model->config().vocab_size);
    for (int32_t id = 0; id < l.tokenizer->vocab_size(); ++id) {
      if (l.tokenizer->is_special(id)) st_.limits.special_texts.push_back(l.tokenizer->token_bytes(id));
    }
    st_.tokenizer.store(l.tokenizer.get());
    st_.engine.store(engine_.get());
    routes_ = make_routes(st_);
    loop_ = std::thread([this] { EXPECT_TRUE(engine_->run().ok()); });
    while (!engine_->health().running) std::this_thread::sleep_for(1ms);
  }
  ~Server() {
    engine_->drain(std::chrono::steady_clock::now() + 10s);
    loop_.join();
  }
  Engine& engine() { return *engine_; }

  // Status and whole body (a stream's SSE text, or the deferred response).
  std::pair<int, std::string> post(const std::string& path, const std::string& body) {
    gateway::HttpRequest req;
    req.method = "POST";
    req.target = req.path = path;
    req.body = body;
    gateway::RouteResult r = routes_(req);
    if (!r.source) return {r.response.status, r.response.body};
    r.source->set_wakeup([] {});
    const auto until = std::chrono::steady_clock::now() + 60s;
    std::string text;
    while (std::chrono::steady_clock::now() < until) {
      if (r.stream) {
        bool done = false;
        text += r.source->take(&done);
        if (done) return {r.response.status, text};
      } else if (auto resp = r.source->take_response()) {
        return {resp->status, resp->body};
      }
      std::this_thread::sleep_for(1ms);
    }
    ADD_FAILURE() << "no response to " << body;
    return {0, text};
  }

 private:
  cpu::ThreadPool pool_;
  std::unique_ptr<StateCache> state_;
  std::unique_ptr<Engine> engine_;
  ServerState st_;
  gateway::Handler routes_;
  std::thread loop_;
};

struct Outcome {
  std::vector<int32_t> tokens;
  bool done = false;
  int error_status = 0;
  std::string error;
};

std::shared_ptr<EngineRequest> request(std::vector<int32_t> prompt, float temperature,
                                       std::vector<std::pair<int32_t, float>> bias = {}) {
  auto r = std::make_shared<EngineRequest>();
  r->id = "t";
  r->prompt = std::move(prompt);
  r->params.max_tokens = 8;
  r->params.ignore_eos = true;
  r->params.sampling.temperature = temperature;
  r->params.sampling.seed = 3;
  r->params.sampling.logit_bias = std::move(bias);
  r->stream = std::make_shared<RequestStream>();
  return r;
}

// Submits the requests together (one batch) and collects each one's outcome.
std::vector<Outcome> run_all(Server& server, const std::vector<std::shared_ptr<EngineRequest>>& reqs) {
  for (const auto& r : reqs) EXPECT_TRUE(server.engine().submit(r).ok());
  std::vector<Outcome> out(reqs.size());
  const auto until = std::chrono::steady_clock::now() + 60s;
  for (bool all = false; !all && std::chrono::steady_clock::now() < until;) {
    all = true;
    for (size_t i = 0; i < reqs.size(); ++i) {
      for (Event& e : reqs[i]->stream->take()) {
        if (e.kind == Event::Kind::kDone) out[i].done = true;
        if (e.kind == Event::Kind::kError) out[i].error_status = e.status, out[i].error = e.message;
        out[i].tokens.insert(out[i].tokens.end(), e.tokens.begin(), e.tokens.end());
      }
      all = all && (out[i].done || out[i].error_status != 0);
    }
    std::this_thread::sleep_for(1ms);
  }
  return out;
}

using test_util::CommandResult;

CommandResult run_kiln(const std::string& args) {
  return test_util::run_command(std::string(KILN_BINARY) + " " + args + " 2>&1");
}

class ModelVocabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kiln_model_vocab_test_" + std::to_string(getpid()));
    ASSERT_TRUE(kiln::test_util::write_micro_model(dir_, /*write_hf=*/true).ok());
    const std::string gguf = (dir_ / "model.gguf").string();
    auto keep = [](const std::string&, std::string&) {};
    copy_gguf(gguf, path("extra.gguf"), {kEvil}, keep);
    copy_gguf(gguf, path("nan.gguf"), {}, [](const std::string& name, std::string& bytes) {
      if (name != "token_embd.weight") return;
      const size_t row = bytes.size() / kVocab;  // f32 rows of hidden_size
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (size_t i = 0; i < row; i += 4) std::memcpy(&bytes[kNanToken * row + i], &nan, 4);
    });
    copy_hf(dir_ / "hf", path("hf_extra"), add_evil);
    copy_hf(dir_ / "hf", path("hf_bad_eos"), [](json::object& c) {
      add_evil(c);
      c["eos_token"] = kEvil;
    });
    copy_hf(dir_ / "hf", path("hf_bad_chat"), [](json::object& c) {
      json::object& decoder = c["added_tokens_decoder"].as_object();
      for (auto& [id, entry] : decoder) {
        if (entry.as_object()["content"] == "<|im_user|>") {
          entry.as_object()["content"] = "<|reserved_token_" + std::string(id) + "|>";
        }
      }
      decoder["640"] = json::object{{"content", "<|im_user|>"}, {"special", true}};
    });
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static inline fs::path dir_;
};

TEST_F(ModelVocabTest, GeneratedTokenizersHaveOneIdPerModelRow) {
  for (const std::string& p : {path("hf"), path("model.gguf")}) {
    Loaded l = load(p);
    ASSERT_TRUE(l.tokenizer) << p;
    EXPECT_EQ(l.model->config().vocab_size, kVocab) << p;
    EXPECT_EQ(l.tokenizer->vocab_size(), kVocab) << p;
    EXPECT_EQ(l.fit.ids_above, 0) << p;
  }
  Loaded hf = load(path("hf")), gguf = load(path("model.gguf"));
  const std::string text = "The quick brown fox<|im_end|>[EOS] 3.14 naïve";
  EXPECT_EQ(hf.tokenizer->encode(text), gguf.tokenizer->encode(text));
}

TEST_F(ModelVocabTest, ExtraTokenizerIdsLoadWithBothCounts) {
  for (const std::string& p : {path("hf_extra"), path("extra.gguf")}) {
    Loaded l = load(p);
    ASSERT_TRUE(l.tokenizer) << p;
    EXPECT_EQ(l.fit.model_vocab, kVocab);
    EXPECT_EQ(l.fit.tokenizer_ids, kVocab + 1) << p;
    EXPECT_EQ(l.fit.ids_above, 1) << p;
    EXPECT_NE(l.fit.describe().find("model 640 rows, tokenizer 641 ids"), std::string::npos)
        << l.fit.describe();
    EXPECT_EQ(l.tokenizer->encode(kEvil), std::vector<int32_t>{640}) << p;
  }
}

TEST_F(ModelVocabTest, TextFormatTokensAboveTheVocabAreALoadError) {
  const std::pair<std::string, std::string> cases[] = {
      {"hf_bad_eos", "end-of-generation token '<|evil|>' has id 640"},
      {"hf_bad_chat", "chat-format token '<|im_user|>' has id 640"},
  };
  for (const auto& [name, expect] : cases) {
    auto m = KimiLinearModel::load(path(name));
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    auto t = load_tokenizer((*m)->checkpoint());
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_NE(t.status().message().find(expect), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find("vocab_size"), std::string::npos) << t.status().message();
  }
}

// The sampler reads the model's logits row: a tokenizer with an extra id (and a bias on it) does
// not change what is sampled.
TEST_F(ModelVocabTest, SamplerIsSizedByTheModel) {
  Loaded plain = load(path("hf")), extra = load(path("hf_extra"));
  ASSERT_TRUE(plain.tokenizer && extra.tokenizer);
  std::vector<Outcome> want, got;
  {
    Server s(plain);
    want = run_all(s, {request({1, 2, 3, 4}, 1.0f), request({5, 6, 7}, 0.0f)});
  }
  {
    Server s(extra);
    got = run_all(s, {request({1, 2, 3, 4}, 1.0f, {{640, 100.0f}}), request({5, 6, 7}, 0.0f)});
  }
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(got[i].done) << got[i].error;
    EXPECT_EQ(got[i].tokens.size(), 8u);
    EXPECT_EQ(got[i].tokens, want[i].tokens);
    for (int32_t t : got[i].tokens) EXPECT_LT(t, kVocab);
  }
}

TEST_F(ModelVocabTest, RequestsNamingIdsAboveTheVocabAreRefused) {
  // route, body, what the message must name: the special token when the text holds it, the id
  // when the request gives the id itself
  const std::string kId = "640";
  const std::tuple<std::string, std::string, std::string> cases[] = {
      {"/v1/completions", R"({"prompt": "<|evil|>", "max_tokens": 2})", kEvil},
      {"/v1/completions", R"({"prompt": "Hello <|evil|> there", "max_tokens": 2, "stream": true})",
       kEvil},
      {"/v1/completions", R"({"prompt": [1, 640], "max_tokens": 2})", kId},
      {"/v1/completions", R"({"prompt": "Hi", "logit_bias": {"640": 1}})", kId},
      {"/v1/completions", R"({"prompt": "Hi", "stop_token_ids": [640]})", kId},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "<|evil|>"}]})",
       kEvil},
      {"/tokenize", R"({"prompt": "a<|evil|>"})", kEvil},
      {"/detokenize", R"({"tokens": [640]})", kId},
  };

  for (const std::string& p : {path("hf_extra"), path("extra.gguf")}) {
    Loaded l = load(p);
    ASSERT_TRUE(l.tokenizer);
    Server s(l);
    for (const auto& [route, body, named] : cases) {
      const auto [status, text] = s.post(route, body);
      EXPECT_EQ(status, 400) << p << " " << body << " -> " << text;
      EXPECT_NE(text.find(named), std::string::npos) << body << " -> " << text;
    }
    const auto [status, text] =
        s.post("/v1/completions", R"({"prompt": "Hello", "max_tokens": 4, "ignore_eos": true})");
    EXPECT_EQ(status, 200) << text;
    EXPECT_EQ(json::parse(text).at("usage").at("completion_tokens").as_int64(), 4) << text;
  }
}

// A request whose forward gives NaN logits (its prompt holds a token whose embedding is NaN) ends
// with a 500 error; a request in the same batch is unaffected.
TEST_F(ModelVocabTest, NonFiniteLogitsEndOnlyThatRequest) {
  Loaded clean = load(path("model.gguf")), broken = load(path("nan.gguf"));
  ASSERT_TRUE(clean.tokenizer && broken.tokenizer);
  const std::vector<int32_t> other = {11, 12, 13, 14, 15};
  std::vector<Outcome> alone;
  {
    Server s(clean);
    alone = run_all(s, {request(other, 0.0f)});
  }
  ASSERT_TRUE(alone[0].done);
  for (int32_t t : alone[0].tokens) ASSERT_NE(t, kNanToken) << "choose another NaN token";
  Server s(broken);
  const auto out = run_all(s, {request({1, 2, kNanToken, 3}, 1.0f), request(other, 0.0f),
                               request({kNanToken}, 0.0f)});
  EXPECT_EQ(out[0].error_status, 500);
  EXPECT_NE(out[0].error.find("non-finite logits"), std::string::npos) << out[0].error;
  EXPECT_TRUE(out[0].tokens.empty());
  EXPECT_EQ(out[2].error_status, 500);
  ASSERT_TRUE(out[1].done) << out[1].error;
  EXPECT_EQ(out[1].tokens, alone[0].tokens);
  EXPECT_EQ(s.engine().stats().slots_used, 0);

  // Through the routes: a stream gets an error event then [DONE]; a plain request a 500 body;
  // the server keeps serving.
  auto [status, text] = s.post("/v1/completions", R"({"prompt": [1, 639], "stream": true})");
  EXPECT_EQ(status, 200);
  const size_t err = text.find(R"("type":"server_error")"), done = text.find("data: [DONE]");
  EXPECT_NE(err, std::string::npos) << text;
  EXPECT_NE(done, std::string::npos) << text;
  EXPECT_LT(err, done) << text;
  std::tie(status, text) = s.post("/v1/chat/completions",
                                  R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"639": 100}, "max_tokens": 3})");
  EXPECT_EQ(status, 500) << text;
  EXPECT_NE(text.find("non-finite logits"), std::string::npos) << text;
  std::tie(status, text) = s.post("/v1/completions", R"({"prompt": "Hello", "max_tokens": 3})");
  EXPECT_EQ(status, 200) << text;

  cpu::ThreadPool pool(1);
  GenerationOptions g;
  g.max_tokens = 4;
  const Status gen = generate(*broken.model, pool, *broken.tokenizer, {1, kNanToken}, g,
                              [](std::string_view) {}, nullptr);
  EXPECT_NE(gen.message().find("non-finite logits"), std::string::npos) << gen.to_string();
}

TEST_F(ModelVocabTest, CliFlagsTheMismatchAndRefusesTheIds) {
  struct Case {
    std::string args;
    bool ok;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"inspect --model " + path("extra.gguf"), true, "vocab: model 640 rows, tokenizer 641 ids"},
      {"inspect --model " + path("hf_extra"), true, "vocab: model 640 rows, tokenizer 641 ids"},
      {"inspect --model " + path("hf"), true, "vocab: model 640 rows, tokenizer 640 ids"},
      {"inspect --model " + path("hf_bad_eos"), false, "'<|evil|>' has id 640"},
      {"generate --model " + path("extra.gguf") + " --chat --prompt '<|evil|>' --max-tokens 2",
       false, "'<|evil|>' (id 640)"},
      {"generate --model " + path("hf_extra") + " --chat --prompt '<|evil|>' --max-tokens 2",
       false, "'<|evil|>' (id 640)"},
      {"generate --model " + path("hf_bad_chat") + " --prompt hi --max-tokens 2", false,
       "'<|im_user|>' has id 640"},
      {"generate --model " + path("nan.gguf") + " --chat --prompt '[PAD]' --max-tokens 2", false,
       "non-finite logits"},
      {"generate --model " + path("hf_extra") + " --prompt hi --max-tokens 2 --temperature 1",
       true, ""},
      {"eval --model " + path("extra.gguf") + " --tokens 1,640", false, "640"},
  };
  for (const Case& c : cases) {
    const CommandResult r = run_kiln(c.args);
    EXPECT_EQ(r.code == 0, c.ok) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    if (!c.ok) {
      EXPECT_NE(r.output.find("kiln: error: "), std::string::npos) << r.output;
    }
  }
}

}  // namespace
}  // namespace kiln::serve
