import { ApiError } from './errors.ts';

/**
 * An explicit table of allowed transitions. Illegal transitions throw: a silent no-op would
 * hide bugs in controllers that think they moved an entity forward.
 */
export class StateMachine<S extends string> {
  constructor(
    readonly entity: string,
    private readonly transitions: Readonly<Record<S, readonly S[]>>,
  ) {}

  can(from: S, to: S): boolean {
    return this.transitions[from]?.includes(to) ?? false;
  }

  assert(from: S, to: S): void {
    if (!this.can(from, to)) {
      throw new ApiError(409, 'illegal_transition', `${this.entity} cannot go from '${from}' to '${to}'`, { from, to });
    }
  }

  next(from: S): readonly S[] {
    return this.transitions[from] ?? [];
  }
}
