// The built-in training text for demo vocabularies: original plain prose, mostly English with
// short passages in other languages and scripts, a little code and some numbers.
#include "tools/make_model/bpe_trainer.h"

namespace kiln::text {
namespace {

constexpr std::string_view kText = R"kiln(The old lighthouse stood at the end of the harbour road, and every evening the keeper climbed the spiral stairs to light the lamp. He had done it for thirty years, in storms and in calm weather, and he said that the sea was never the same twice. Some nights the water was flat and silver under the moon; other nights the waves broke over the rocks and the spray reached the windows of the lamp room.

In the village below, the bakery opened before dawn. The baker kneaded the dough by hand, shaped the loaves, and put them into the oven while the streets were still dark. By six o'clock the smell of fresh bread drifted down to the fishing boats, and the fishermen came up to buy rolls before they set out. "We don't leave without breakfast," one of them said. "It's a rule we've kept for as long as anyone remembers."

A good model of language learns which words tend to follow which. It does not memorise every sentence; instead it learns patterns: that "the" is often followed by a noun, that questions end with a question mark, and that a story about a lighthouse is likely to mention the sea. A tokenizer cuts text into pieces before the model ever sees it. Frequent words become single tokens, while rare words are spelled out from smaller parts. Numbers such as 3, 42, 100, 2024 and 65536 are split into groups of at most three digits.

How does a recurrent layer remember what it has read? It keeps a state, a matrix that is updated at every step. Each new token writes a little into the state and lets a little of the old content fade away. The gates decide how much to keep and how much to forget. Attention layers, by contrast, look back at every earlier position, which is precise but grows more expensive as the context gets longer. A hybrid model mixes both kinds of layers so that it can be fast and still recall details from far back.

The river ran through the middle of the town, crossed by seven stone bridges. Children fished from the banks in summer and skated on the ice in winter. The market square was busy on Saturdays: farmers sold apples, pears, cheese, honey and eggs; a man played the violin near the fountain; and the clock on the town hall struck the hours a minute late, as it had done for a century.

She opened the letter slowly. It was short, written in a careful hand: "Dear Anna, I hope you are well. The garden is full of roses this year, and the cat has learned to open the kitchen door. Please come and visit when you can. With love, your grandmother." Anna smiled, folded the letter, and put it in her pocket. Then she looked out of the window at the rain and decided that she would take the train on Friday.

Weather report: on Monday the temperature will reach 21 degrees with light winds from the west. On Tuesday clouds will gather in the afternoon, and there is a 60% chance of rain by the evening. Wednesday will be cooler, around 15 degrees, with strong gusts near the coast. The weekend should be bright and dry.

def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts

for (int i = 0; i < n; ++i) {
  total += values[i] * weights[i];
}

Recipe for a simple soup: chop two onions, three carrots and a stick of celery. Warm some oil in a large pot, add the vegetables and cook them gently for ten minutes. Pour in a litre of stock, add a bay leaf, salt and pepper, and let it simmer for half an hour. Blend until smooth, or leave it chunky if you prefer. Serve with bread.

Le matin, la ville se réveille lentement. Les cafés ouvrent leurs portes, et l'odeur du café remplit les rues étroites. Un vieil homme lit son journal sur un banc, pendant que des enfants courent vers l'école.

Der Zug fährt um acht Uhr ab. Wir haben noch Zeit für einen Kaffee und ein Stück Kuchen. Danach gehen wir zum Bahnsteig und warten auf die Ansage.

El mar estaba tranquilo aquella mañana. Los pescadores preparaban sus redes en el puerto, y las gaviotas volaban en círculos sobre las barcas.

Вечером мы сидели у окна и смотрели, как падает снег. Город становился тихим и белым, а фонари светили мягким жёлтым светом.

今天天气很好，我们去公园散步。湖边有很多人在钓鱼，孩子们在草地上玩耍。

東京の朝はとても忙しい。駅には人があふれ、電車は数分おきに到着する。

Questions people often ask: What time is it? Where is the station? How much does this cost? Can you help me, please? Thank you very much! You're welcome. I'm sorry, I didn't understand. Could you say that again, more slowly?

The experiment was repeated five times. In each run the model was trained for 1000 steps with a learning rate of 0.001, and the loss fell from 4.2 to 1.7. The results were consistent: the hybrid model reached the same quality as the attention-only baseline while using less memory for long inputs.

At the end of the day the keeper wrote in his logbook: "Wind from the north-east, moderate. Sea rough. Two ships passed in the night. Lamp lit at 19:42, extinguished at 06:15. All well."
)kiln";

}  // namespace

std::string_view builtin_training_text() { return kText; }

}  // namespace kiln::text
