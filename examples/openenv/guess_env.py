"""A number-guessing environment served with openenv-core (0.3), for trawl's OpenEnv tests and
the README's "Bring your own environment in Python" example.

    python guess_env.py [--host 127.0.0.1] [--port 8000] [--sessions 4]

It serves OpenEnv's protocol with `create_app`: GET /health, and one WebSocket session per
episode at /ws (reset, step, state, close). Each episode hides a number from 1 to 10 chosen by
the reset's seed; the agent has three guesses (`{"guess": "7"}`), is told "higher" or "lower",
and gets reward 1 for a right guess, else 0.

For tests, a reset may ask for a fault on the first step: `fault = "die"` (the server process
exits), `"hang"` (the step never answers), `"raise"` (the step raises) or `"garbage"` (the
server answers the step with bytes that are not JSON). A reset with `reward = x` makes a hostile
server: every step answers with reward x (say 1e308) in place of the game's.

With --port 0 it picks a free port; either way it prints `PORT <n>` on its first line.
"""

import argparse
import json
import os
import re
import socket
import sys
import time
from typing import Any, Optional

import uvicorn
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State


class GuessAction(Action):
    guess: str


class GuessObservation(Observation):
    prompt: str
    guesses_left: int


class GuessEnvironment(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self._state = State(step_count=0)
        self.target = 1
        self.left = 3
        self.fault: Optional[str] = None
        self.reward: Optional[float] = None

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None,
              fault: Optional[str] = None, reward: Optional[float] = None,
              **kwargs: Any) -> GuessObservation:
        self.target = ((seed or 0) * 7 + 3) % 10 + 1
        self.left = 3
        self.fault = fault
        self.reward = reward
        self._state = State(episode_id=episode_id, step_count=0)
        return GuessObservation(
            prompt="I am thinking of a whole number from 1 to 10. You have 3 guesses. "
                   "Reply with your guess as a number.",
            guesses_left=self.left, done=False, reward=None)

    def step(self, action: GuessAction, timeout_s: Optional[float] = None,
             **kwargs: Any) -> GuessObservation:
        observation = self.play(action)
        if self.reward is not None:
            observation.reward = self.reward
        return observation

    def play(self, action: GuessAction) -> GuessObservation:
        if self.fault == "die":
            os._exit(3)
        if self.fault == "hang":
            time.sleep(3600)
        if self.fault == "raise":
            raise RuntimeError("the environment broke")
        self._state.step_count += 1
        self.left -= 1
        found = re.findall(r"-?\d+", action.guess)
        if not found:
            prompt, reward = "That is not a number.", 0.0
        elif int(found[-1]) == self.target:
            return GuessObservation(prompt="Right!", guesses_left=self.left, done=True, reward=1.0)
        elif int(found[-1]) < self.target:
            prompt, reward = "Higher.", 0.0
        else:
            prompt, reward = "Lower.", 0.0
        done = self.left <= 0
        if done:
            prompt += f" No guesses left; it was {self.target}."
        return GuessObservation(prompt=prompt, guesses_left=self.left, done=done, reward=reward)

    @property
    def state(self) -> State:
        return self._state


class Garbage:
    """Answers the first step of a session whose reset asked for `fault = "garbage"` with bytes
    that are not JSON, in place of the server's own answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        seen = {"garbage": False, "stepped": False}

        async def watch():
            event = await receive()
            text = event.get("text") if event.get("type") == "websocket.receive" else None
            if text:
                try:
                    msg = json.loads(text)
                except ValueError:
                    msg = {}
                if msg.get("type") == "reset" and (msg.get("data") or {}).get("fault") == "garbage":
                    seen["garbage"] = True
                if msg.get("type") == "step":
                    seen["stepped"] = True
            return event

        async def corrupt(event):
            if event.get("type") == "websocket.send" and seen["garbage"] and seen["stepped"]:
                event = {"type": "websocket.send", "text": "<<<this is not JSON>>>"}
            await send(event)

        return await self.app(scope, watch, corrupt)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--sessions", type=int, default=4)
    args = parser.parse_args()
    app = create_app(GuessEnvironment, GuessAction, GuessObservation,
                     env_name="guess", max_concurrent_envs=args.sessions)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(Garbage(app), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
