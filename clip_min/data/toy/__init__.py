"""The toy world: a small Concadia the whole method can run on, offline, in minutes on a CPU.

Each image is a drawn scene: a background colour and one or two groups of identical shapes
(shape, colour, size, position, count). Each gets two texts, as in Concadia:

  description  says what is visible, as alt text would, so it could replace the image:
               "Two large red circles on the left and a small blue star on the right, on a
               yellow background."
  caption      complements the image with what it cannot show (names, dates, places, events,
               provenance): "The Varga medallions at the 1923 Lyon Fair."

Real captions still name the depicted thing, which is why CLIP can match images to captions at
all. The toy captions do the same, indirectly: each shape has object nouns used only in captions
(circle -> medallion, coin, disc) and each colour a few evocative surnames (red -> Rossi). A
caption never uses a colour word or a shape's name. `caption_grounding` and
`caption_color_hint` set how often those hints appear.

make_toy_world() writes, under its root:

  concadia/wiki_split.json, concadia/resized/<id>.jpg   Concadia's released layout
  transfer/<task>/meta/{classes,labels,test}.txt,       zero-shot tasks in Food-101's layout
  transfer/<task>/images/<class>/<id>.jpg
  norms/glasgow_norms.csv                               word imageability, Glasgow Norms layout
  norms/brysbaert_concreteness.txt                      word concreteness, Brysbaert et al.'s layout
  toy_world.json                                        manifest, written last

Everything is a function of the seed: plan_toy_world() gives the scenes and texts without
drawing anything, so tests can check the files against it.

The package, in the order a world is made:

  vocabulary.py    what can be drawn, and the words captions and articles are made of
  records.py       ToyConfig and the records (ShapeGroup, Scene, ToyImage, TransferImage)
  scenes.py        random scenes and their descriptions
  articles.py      articles, captions and contexts; plan_toy_world, plan_transfer_tasks
  drawing.py       render_scene
  imageability.py  the word ratings and their two norms files
  world.py         make_toy_world: writing the files
"""

from .articles import plan_toy_world, plan_transfer_tasks
from .drawing import render_scene
from .imageability import GLASGOW_DIMENSIONS, toy_word_ratings, write_brysbaert_concreteness, write_glasgow_norms
from .records import Scene, ShapeGroup, ToyConfig, ToyImage, TransferImage
from .scenes import describe, random_scene
from .vocabulary import (BACKGROUND_CITIES, BACKGROUNDS, CITIES, COLOR_SURNAMES, COLORS, COUNT_WORDS, DOMAINS, EVENTS,
                         FIRST_NAMES, GENERIC_NOUNS, MONTHS, OBJECT_NOUNS, OBJECT_PLURALS, POSITION_PHRASES, POSITIONS,
                         PROFESSIONS, RADII, SHAPE_PLURALS, SHAPES, SUPERSAMPLE, SURNAMES)
from .world import (CONCADIA_SUBDIR, CONCRETENESS_FILE, FORMAT_VERSION, MANIFEST_FILE, NORMS_FILE, TRANSFER_SUBDIR,
                    make_toy_world, toy_world_dir, word_tokens)
