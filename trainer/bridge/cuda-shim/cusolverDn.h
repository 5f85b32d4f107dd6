#pragma once
// See README.
#include "cusolver_common.h"
typedef struct cusolverDnContext* cusolverDnHandle_t;
