// SPDX-License-Identifier: GPL-2.0
/*
 * The C shim of the glue test module (dm-rthin-test.ko, see Kbuild): dm_shim.c again, without
 * dm-rthin's module parameter. Kbuild links an object into one module only, hence this file.
 */
#define RTHIN_GLUE_TEST_MODULE
#include "dm_shim.c"
