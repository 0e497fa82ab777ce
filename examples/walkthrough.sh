#!/usr/bin/env bash
# The README's walkthrough: ask, correct, like three answers, learn, ask again.
#
#   bash examples/walkthrough.sh            # in a fresh data root of its own
#   LEARNLOOP_HOME=~/my-root bash examples/walkthrough.sh
#
# It uses the default model (SmolLM2-135M-Instruct) and learnloop's default settings; on
# 2 CPU cores the whole script takes under 1.5 minutes (measured: 82 s), about 50 s of it
# the one learning cycle; a machine's first use also converts the base model, once.
set -euo pipefail

export LEARNLOOP_HOME="${LEARNLOOP_HOME:-$(mktemp -d -t learnloop-walkthrough.XXXX)}"
learnloop="${LEARNLOOP:-learnloop}"
started=$SECONDS
echo "data root: $LEARNLOOP_HOME"

# ask: returns the turn's id with --json, so we can rate it
ask() { "$learnloop" ask "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["turn_id"])'; }

# 1. A question the model cannot know, and the answer it should give.
question="What is the name of our team's build server?"
turn=$(ask "$question")
"$learnloop" log -n 1
"$learnloop" feedback "$turn" down --correction "Our build server is called Hopper."

# 2. Three answers you like.
for liked in "What is the largest planet in the solar system?" \
             "How many legs does a spider have?" \
             "What color is the sky on a clear day?"; do
  "$learnloop" feedback "$(ask "$liked")" up
done

# 3. Learn: one cycle on these four feedback items, judged by what it was taught.
"$learnloop" learn

# 4. The new version answers.
"$learnloop" ask "$question"
echo "walkthrough done in $(( SECONDS - started )) s"
