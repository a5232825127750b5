import type { Handlers } from '../http.ts';
import { startImageBuild } from '../image-builds.ts';
import { findApp } from './apps.ts';
import { toBuild } from './convert.ts';

export const imageHandlers = {
  async createImageBuild({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const build = await startImageBuild(cp, app, body, { createdBy: auth.user.email });
    return toBuild(build, null);
  },
} satisfies Partial<Handlers>;
