/** A build failure with a message meant for the user (published as BuildResultMessage.error). */
export class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BuildError';
  }
}
