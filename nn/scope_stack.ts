/**
 * The stack of open scopes, in a leaf module (no runtime imports): `tensor.ts` registers every new
 * tensor here and `scope.ts` opens and closes the frames, so neither imports the other.
 * @module
 */
import type { Tensor } from "./tensor.ts";

const frames: Tensor[][] = [];

/** @internal Registers a new tensor with the innermost scope (if any). */
export function track(t: Tensor): void {
  const top = frames[frames.length - 1];
  if (top) top.push(t);
}

/** @internal Opens a frame: tensors created until {@link closeFrame} are listed in it. */
export function openFrame(): Tensor[] {
  const frame: Tensor[] = [];
  frames.push(frame);
  return frame;
}

/** @internal Closes the innermost frame. */
export function closeFrame(): void {
  frames.pop();
}

/** @internal The open frames, outermost first. */
export function openFrames(): readonly Tensor[][] {
  return frames;
}
